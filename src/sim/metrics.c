/*
 * Per-round metrics output: JSON lines for programs and a self-contained HTML
 * report for people. The report is one file with inline CSS and inline SVG
 * charts drawn here (no scripts, fonts, images or links), so it reads offline,
 * prints, and can be pasted into a paper appendix. Output is deterministic:
 * the same inputs give the same bytes (no timestamps, numbers always formatted
 * in the "C" locale), and the file is written atomically.
 */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_internal.h"
#include "core/strbuf.h"
#include "edgefl/io.h"
#include "edgefl/metrics.h"

/* ---- "C" numeric locale for the calling thread ------------------------- */

/* printf and strtod follow LC_NUMERIC: an embedder that set a locale with a
 * decimal comma would otherwise get "0,5" in JSON and SVG coordinates. The
 * switch is per thread (uselocale), so other threads are unaffected. */
typedef struct c_numeric {
    locale_t c, old;
} c_numeric;

static void c_numeric_enter(c_numeric *s) {
    s->c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    s->old = s->c ? uselocale(s->c) : (locale_t)0;
}

static void c_numeric_leave(c_numeric *s) {
    if (!s->c) return;
    uselocale(s->old);
    freelocale(s->c);
}

/* ---- round records and JSON lines ------------------------------------- */

ef_round_record ef_round_record_empty(uint32_t round) {
    ef_round_record r;
    memset(&r, 0, sizeof r);
    r.round = round;
    r.sim_start = r.sim_end = r.wall_s = NAN;
    r.train_loss = r.test_accuracy = r.test_loss = r.fed_accuracy = r.fed_loss = NAN;
    r.staleness_mean = NAN;
    r.epsilon = NAN;
    r.update_norm_median = NAN;
    r.dp_clip = NAN;
    return r;
}

/* A fixed buffer for one JSON line; every field fits many times over. */
typedef struct jline {
    char buf[2048];
    size_t len;
    int n_keys;
} jline;

static void j_key(jline *j, const char *key) {
    j->len += (size_t)snprintf(j->buf + j->len, sizeof j->buf - j->len, "%s\"%s\":",
                               j->n_keys++ ? "," : "", key);
}

static void j_u64(jline *j, const char *key, uint64_t v) {
    j_key(j, key);
    j->len += (size_t)snprintf(j->buf + j->len, sizeof j->buf - j->len, "%llu",
                               (unsigned long long)v);
}

/* Non-finite values have no JSON spelling and mean "not measured": omitted. */
static void j_f64(jline *j, const char *key, double v) {
    if (!isfinite(v)) return;
    char num[40];
    ef__fmt_exact(num, sizeof num, v);
    j_key(j, key);
    j->len += (size_t)snprintf(j->buf + j->len, sizeof j->buf - j->len, "%s", num);
}

/* A JSON string: quotes, backslashes and control bytes escaped. */
static void j_str(jline *j, const char *key, const char *v) {
    j_key(j, key);
    j->buf[j->len++] = '"';
    for (const unsigned char *p = (const unsigned char *)v; *p && j->len + 8 < sizeof j->buf; p++) {
        if (*p == '"' || *p == '\\') j->buf[j->len++] = '\\', j->buf[j->len++] = (char)*p;
        else if (*p < 0x20) j->len += (size_t)snprintf(j->buf + j->len, sizeof j->buf - j->len, "\\u%04x", *p);
        else j->buf[j->len++] = (char)*p;
    }
    j->buf[j->len++] = '"';
}

ef_status ef_round_record_write_json(FILE *f, const ef_round_record *r, int with_wall) {
    if (!f || !r) return ef__fail(EF_ERR_INVALID, "ef_round_record_write_json: NULL argument");
    c_numeric loc;
    c_numeric_enter(&loc);
    jline j;
    j.len = 0;
    j.n_keys = 0;
    j.buf[j.len++] = '{';
    j_u64(&j, "round", r->round);
    j_f64(&j, "sim_start", r->sim_start);
    j_f64(&j, "sim_end", r->sim_end);
    if (with_wall) j_f64(&j, "wall_s", r->wall_s);
    j_u64(&j, "selected", r->selected);
    j_u64(&j, "completed", r->completed);
    j_u64(&j, "dropped", r->dropped);
    j_u64(&j, "late", r->late);
    j_u64(&j, "rejected", r->rejected);
    j_key(&j, "aggregated");
    j.len += (size_t)snprintf(j.buf + j.len, sizeof j.buf - j.len, "%s",
                              r->aggregated ? "true" : "false");
    j_f64(&j, "train_loss", r->train_loss);
    j_f64(&j, "test_accuracy", r->test_accuracy);
    j_f64(&j, "test_loss", r->test_loss);
    j_f64(&j, "fed_accuracy", r->fed_accuracy);
    j_f64(&j, "fed_loss", r->fed_loss);
    j_u64(&j, "bytes_up", r->bytes_up);
    j_u64(&j, "bytes_down", r->bytes_down);
    j_f64(&j, "staleness_mean", r->staleness_mean);
    j_u64(&j, "staleness_max", r->staleness_max);
    j_f64(&j, "epsilon", r->epsilon);
    j_f64(&j, "dp_clip", r->dp_clip);
    j_f64(&j, "update_norm_median", r->update_norm_median);
    if (r->note[0]) j_str(&j, "note", r->note);
    j.len += (size_t)snprintf(j.buf + j.len, sizeof j.buf - j.len, "}\n");
    c_numeric_leave(&loc);
    if (fwrite(j.buf, 1, j.len, f) != j.len)
        return ef__fail(EF_ERR_IO, "round %u: cannot write the JSON metrics line: %s",
                        (unsigned)r->round, strerror(errno));
    return EF_OK;
}

/* ---- text escaping ------------------------------------------------------ */

/* Appends n bytes of s as HTML/XML text: markup characters become entities,
 * invalid UTF-8 and control characters (illegal in XML) become U+FFFD, so
 * user text can neither break out of an element nor make the SVG invalid. */
static void sb_esc_n(ef__sb *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        const char *ent = NULL;
        switch (c) {
        case '&': ent = "&amp;"; break;
        case '<': ent = "&lt;"; break;
        case '>': ent = "&gt;"; break;
        case '"': ent = "&quot;"; break;
        case '\'': ent = "&#39;"; break;
        default: break;
        }
        if (ent) {
            ef__sb_puts(b, ent);
            i++;
            continue;
        }
        if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7F) {
            ef__sb_puts(b, "&#65533;");
            i++;
            continue;
        }
        size_t k = ef__utf8_seq(u + i, n - i);
        if (k == 0) {
            ef__sb_puts(b, "&#65533;");
            i++;
            continue;
        }
        ef__sb_put(b, s + i, k);
        i += k;
    }
}

static void sb_esc(ef__sb *b, const char *s) { sb_esc_n(b, s, strlen(s)); }

/* ---- configuration pretty-printer -------------------------------------- */

/* End (exclusive) of the JSON string starting at s[i] == '"'. */
static size_t json_str_end(const char *s, size_t n, size_t i) {
    for (i++; i < n; i++) {
        if (s[i] == '\\') i++;
        else if (s[i] == '"') return i + 1;
    }
    return n;
}

static int json_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/*
 * Where the container opening at s[i] closes (index after the bracket) if it
 * holds no nested container and prints within `budget` characters; else 0.
 * Such short flat containers ([1, 2, 3], {"lr": 0.1}) stay on one line.
 */
static size_t json_flat_end(const char *s, size_t n, size_t i, size_t budget) {
    size_t width = 1;
    for (size_t k = i + 1; k < n; k++) {
        char c = s[k];
        if (c == '"') {
            size_t e = json_str_end(s, n, k);
            width += e - k;
            k = e - 1;
        } else if (c == '{' || c == '[') {
            return 0;
        } else if (c == '}' || c == ']') {
            return width + 1 <= budget ? k + 1 : 0;
        } else if (c == ',' || c == ':') {
            width += 2;
        } else if (!json_ws(c)) {
            width++;
        }
        if (width > budget) return 0;
    }
    return 0;
}

static void json_indent(ef__sb *b, int depth) {
    ef__sb_puts(b, "\n");
    for (int d = 0; d < depth && d < 32; d++) ef__sb_puts(b, "  ");
}

/*
 * Re-indents JSON text token by token (two spaces a level) and appends it
 * escaped. The tokens are copied verbatim, so numbers and strings show
 * exactly as given; text that is not valid JSON still comes out readable.
 */
static void sb_json_pretty(ef__sb *b, const char *s) {
    size_t n = strlen(s);
    int depth = 0;
    size_t flat_until = 0; /* inside a one-line container up to this index */
    for (size_t i = 0; i < n;) {
        char c = s[i];
        if (json_ws(c)) {
            i++;
            continue;
        }
        if (c == '"') {
            size_t e = json_str_end(s, n, i);
            sb_esc_n(b, s + i, e - i);
            i = e;
            continue;
        }
        if (!strchr("{}[],:", c)) { /* a number, literal or stray text */
            size_t e = i;
            while (e < n && !json_ws(s[e]) && !strchr("{}[],:\"", s[e])) e++;
            sb_esc_n(b, s + i, e - i);
            i = e;
            continue;
        }
        if (i < flat_until) {
            if (c == ',') ef__sb_puts(b, ", ");
            else if (c == ':') ef__sb_puts(b, ": ");
            else ef__sb_put(b, s + i, 1);
            i++;
            continue;
        }
        switch (c) {
        case '{':
        case '[': {
            size_t e = json_flat_end(s, n, i, 64);
            ef__sb_put(b, s + i, 1);
            if (e) {
                flat_until = e;
            } else {
                depth++;
                json_indent(b, depth);
            }
            break;
        }
        case '}':
        case ']':
            if (depth > 0) depth--;
            json_indent(b, depth);
            ef__sb_put(b, s + i, 1);
            break;
        case ',':
            ef__sb_puts(b, ",");
            json_indent(b, depth);
            break;
        default: ef__sb_puts(b, ": "); break; /* ':' */
            }
            i++;
    }
}

/* ---- human units -------------------------------------------------------- */

typedef struct unit {
    const char *name;
    double div; /* value in base units / div = value in this unit */
} unit;

/* Decimal (SI) units: 1 MB = 10^6 bytes, the convention for traffic. */
static unit bytes_unit(double max_bytes) {
    static const unit u[] = {{"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
                             {"PB", 1e15}, {"EB", 1e18}};
    size_t k = 0;
    while (k + 1 < sizeof u / sizeof u[0] && max_bytes >= u[k + 1].div) k++;
    return u[k];
}

/* Seconds shown as ms, s, min, h or days so the numbers stay small. */
static unit time_unit(double max_s) {
    if (max_s > 0 && max_s < 1) return (unit){"ms", 1e-3};
    if (max_s < 180) return (unit){"s", 1};
    if (max_s < 3 * 3600) return (unit){"min", 60};
    if (max_s < 3 * 86400) return (unit){"h", 3600};
    return (unit){"days", 86400};
}

/* Three significant digits in the unit: 0.123, 1.23, 12.3, 123. */
static void fmt_3sig(char *out, size_t cap, double v, const char *unit_name) {
    double a = fabs(v);
    int dec = a < 1 ? 3 : a < 10 ? 2 : a < 100 ? 1 : 0;
    if (a == 0) dec = 0;
    snprintf(out, cap, "%.*f %s", dec, v, unit_name);
}

static void fmt_bytes(char *out, size_t cap, double v) {
    unit u = bytes_unit(v);
    if (u.div == 1) snprintf(out, cap, "%.0f B", v);
    else fmt_3sig(out, cap, v / u.div, u.name);
}

static void fmt_duration(char *out, size_t cap, double s) {
    if (!isfinite(s)) {
        snprintf(out, cap, "&#8212;");
        return;
    }
    unit u = time_unit(fabs(s));
    fmt_3sig(out, cap, s / u.div, u.name);
}

/* ---- axes ---------------------------------------------------------------- */

/* Values beyond this are drawn at the limit, so axis arithmetic stays finite. */
#define AXIS_LIMIT 1e300

typedef struct axis {
    double lo, hi;   /* domain mapped onto the plot */
    double t0, step; /* first tick and tick spacing */
    int nt;          /* number of ticks */
    int dec;         /* decimals of fixed-point labels, or -1 for %g labels */
    int sig;         /* significant digits of %g labels */
} axis;

enum {
    AX_INT = 1,  /* integer data (rounds, counts): ticks at least 1 apart */
    AX_ZERO = 2, /* include 0 (counts, bytes) */
    AX_TIGHT = 4 /* domain = data range (x axes); else widened to whole ticks */
};

/* Heckbert's "nice numbers": 1, 2 or 5 times a power of ten near x. */
static double nice_num(double x, int round_down) {
    if (!(x > 1e-300)) x = 1e-300;
    if (x > 1e300) x = 1e300;
    double e = floor(log10(x));
    double p = pow(10, e);
    double f = x / p, nf;
    if (round_down) nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    else nf = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
    return nf * p;
}

static double clampd(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Tick count and label format for a domain and step already chosen. */
static void axis_finish(axis *a) {
    a->nt = (int)floor((a->hi - a->t0) / a->step + 1e-9) + 1;
    if (a->nt < 1) a->nt = 1;
    if (a->nt > 60) a->nt = 60;
    double mag = fmax(fabs(a->lo), fabs(a->hi));
    int k = (int)floor(log10(a->step) + 1e-9);
    if (mag >= 1e7 || k < -5) {
        a->dec = -1;
        a->sig = (int)clampd(floor(log10(mag)) - k + 1, 1, 17);
    } else {
        a->dec = k < 0 ? -k : 0;
        a->sig = 0;
    }
}

static void axis_init(axis *a, double mn, double mx, int max_ticks, int flags) {
    if (!(mn <= mx)) mn = 0, mx = 1; /* no data */
    mn = clampd(mn, -AXIS_LIMIT, AXIS_LIMIT);
    mx = clampd(mx, -AXIS_LIMIT, AXIS_LIMIT);
    if (flags & AX_ZERO) {
        if (mn > 0) mn = 0;
        if (mx < 0) mx = 0;
    }
    /* A flat series still needs a range to draw against. */
    if (mx - mn <= fmax(fabs(mn), fabs(mx)) * 1e-9) {
        double d = (flags & AX_INT) ? ((flags & AX_TIGHT) ? 0.5 : 1)
                   : mn != 0            ? fabs(mn) * 0.05
                                        : 1;
        if ((flags & AX_ZERO) && mn == 0) mx = mn + 2 * d;
        else mn -= d, mx += d;
    }
    double step;
    if (flags & AX_TIGHT) step = nice_num((mx - mn) / (max_ticks - 1), 1);
    else step = nice_num(nice_num(mx - mn, 0) / (max_ticks - 1), 1);
    if ((flags & AX_INT) && step < 1) step = 1;
    if (flags & AX_TIGHT) {
        a->lo = mn;
        a->hi = mx;
        a->t0 = ceil(mn / step - 1e-9) * step;
    } else {
        a->lo = floor(mn / step + 1e-9) * step;
        a->hi = ceil(mx / step - 1e-9) * step;
        a->t0 = a->lo;
    }
    a->step = step;
    axis_finish(a);
}

static double axis_tick(const axis *a, int i) {
    double t = a->t0 + i * a->step;
    return fabs(t) < a->step * 1e-6 ? 0 : t; /* no "-0.0" */
}

static int axis_label(const axis *a, double v, char *out, size_t cap) {
    if (a->dec >= 0) return snprintf(out, cap, "%.*f", a->dec, v);
    return snprintf(out, cap, "%.*g", a->sig, v);
}

static int axis_label_width(const axis *a) {
    int w = 0;
    for (int i = 0; i < a->nt; i++) {
        char buf[64];
        int n = axis_label(a, axis_tick(a, i), buf, sizeof buf);
        if (n > w) w = n;
    }
    return w;
}

/* ---- SVG charts ------------------------------------------------------- */

#define CW 600.0 /* chart size in SVG user units */
#define CH 330.0
#define FONT_PX 12.0
#define CHAR_W (FONT_PX * 0.6) /* generous average glyph width for layout */
#define MAX_MARKERS 40         /* markers on points when a series has fewer */
#define MAX_BARS 200           /* more rounds than this: bars per group of rounds */

#define C_TEXT "#24292f"
#define C_MUTED "#6e7781"
#define C_GRID "#e6e9ed"
#define C_AXIS "#8c959f"
/* Okabe-Ito colours: distinguishable with the common colour-vision deficiencies. */
#define C_BLUE "#0072B2"
#define C_ORANGE "#E69F00"
#define C_GREEN "#009E73"
#define C_VERM "#D55E00"
#define C_PURPLE "#CC79A7"
#define C_SKY "#56B4E9"
#define C_GRAYBAR "#c8ccd1"

enum { MK_NONE, MK_CIRCLE, MK_SQUARE, MK_TRIANGLE, MK_DIAMOND };
enum { DASH_NONE, DASH_DASHED, DASH_DOTTED };

static double utf8_chars(const char *s) {
    double n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80) n++;
    return n;
}

static const char *dash_attr(int dash) {
    switch (dash) {
    case DASH_DASHED: return " stroke-dasharray=\"6 3\"";
    case DASH_DOTTED: return " stroke-dasharray=\"1.5 2.5\" stroke-linecap=\"round\"";
    default: return "";
    }
}

static void svg_marker(ef__sb *b, int shape, double x, double y, const char *color) {
    switch (shape) {
    case MK_CIRCLE:
        ef__sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>", x, y, color);
        break;
    case MK_SQUARE:
        ef__sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"5.6\" height=\"5.6\" fill=\"%s\"/>",
                      x - 2.8, y - 2.8, color);
        break;
    case MK_TRIANGLE:
        ef__sb_printf(b, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fZ\" fill=\"%s\"/>", x, y - 3.6,
                      x + 3.4, y + 2.4, x - 3.4, y + 2.4, color);
        break;
    case MK_DIAMOND:
        ef__sb_printf(b, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fL%.1f %.1fZ\" fill=\"%s\"/>", x,
                      y - 3.8, x + 3.8, y, x, y + 3.8, x - 3.8, y, color);
        break;
    default: break;
    }
}

/* One legend entry: a line sample (with marker), a filled box, or muted text. */
typedef struct legend_item {
    const char *name;
    const char *color;
    int dash, shape;
    int box;   /* filled square instead of a line sample */
    int muted; /* text only, grey: "... not measured" */
} legend_item;

/* Opens the chart: svg element, title, optional subtitle, legend rows.
 * Returns the y coordinate where the plot area may start. */
static double chart_begin(ef__sb *b, const char *title, const char *subtitle,
                          const legend_item *items, int n_items) {
    ef__sb_printf(b,
                  "<figure><svg viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" height=\"%.0f\" "
                  "role=\"img\" aria-label=\"",
                  CW, CH, CW, CH);
    sb_esc(b, title);
    ef__sb_printf(b,
                  "\" font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', "
                  "Arial, sans-serif\" font-size=\"%.0f\" fill=\"%s\">",
                  FONT_PX, C_TEXT);
    ef__sb_puts(b, "<title>");
    sb_esc(b, title);
    ef__sb_puts(b, "</title>");
    ef__sb_printf(b, "<text x=\"14\" y=\"22\" font-size=\"15\" font-weight=\"600\">");
    sb_esc(b, title);
    ef__sb_puts(b, "</text>");
    double y = 22;
    if (subtitle && *subtitle) {
        y += 17;
        ef__sb_printf(b, "<text x=\"14\" y=\"%.0f\" fill=\"%s\">", y, C_MUTED);
        ef__sb_puts(b, subtitle); /* built from numbers and fixed text; already markup-safe */
            ef__sb_puts(b, "</text>");
    }
    if (n_items > 0) {
        y += 19;
        double x = 14;
        for (int i = 0; i < n_items; i++) {
            const legend_item *it = &items[i];
            double w = (it->muted ? 0 : 30) + utf8_chars(it->name) * CHAR_W + 16;
            if (x > 14 && x + w > CW - 10) {
                x = 14;
                y += 17;
            }
            if (it->muted) {
                ef__sb_printf(b,
                              "<text x=\"%.1f\" y=\"%.0f\" fill=\"%s\" font-style=\"italic\">", x,
                              y, C_MUTED);
            } else {
                if (it->box)
                    ef__sb_printf(b,
                                  "<rect x=\"%.1f\" y=\"%.1f\" width=\"11\" height=\"11\" rx=\"2\" "
                                  "fill=\"%s\"/>",
                                  x + 6, y - 9.5, it->color);
                else {
                    ef__sb_printf(b,
                                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                                  "stroke-width=\"2\"%s/>",
                                  x, y - 4, x + 24, y - 4, it->color, dash_attr(it->dash));
                    svg_marker(b, it->shape, x + 12, y - 4, it->color);
                }
                ef__sb_printf(b, "<text x=\"%.1f\" y=\"%.0f\">", x + 30, y);
            }
            sb_esc(b, it->name);
            ef__sb_puts(b, "</text>");
            x += w;
        }
    }
    return y + 16;
}

static void chart_end(ef__sb *b) { ef__sb_puts(b, "</svg></figure>\n"); }

    /* Plot area and axes of one chart. */
    typedef struct frame {
    double x0, x1, y0, y1; /* left, right, top, bottom in SVG units */
    axis ax, ay;
    int show_x, show_y; /* ticks and labels (not for an axis without data) */
} frame;

static double fx(const frame *fr, double v) {
    v = clampd(v, -AXIS_LIMIT, AXIS_LIMIT);
    double t = (v - fr->ax.lo) / (fr->ax.hi - fr->ax.lo);
    return fr->x0 + clampd(t, -0.02, 1.02) * (fr->x1 - fr->x0);
}

static double fy(const frame *fr, double v) {
    v = clampd(v, -AXIS_LIMIT, AXIS_LIMIT);
    double t = (v - fr->ay.lo) / (fr->ay.hi - fr->ay.lo);
    return fr->y1 - clampd(t, -0.02, 1.02) * (fr->y1 - fr->y0);
}

/* Fewer x ticks until their labels no longer collide. */
static void frame_fit_x(frame *fr) {
    axis a = fr->ax;
    for (int guard = 0; guard < 8; guard++) {
        double spacing = fr->ax.step / (fr->ax.hi - fr->ax.lo) * (fr->x1 - fr->x0);
        if (spacing >= axis_label_width(&fr->ax) * CHAR_W + 12 || fr->ax.nt <= 2) return;
        /* next nice step: 1 -> 2 -> 5 -> 10 */
        double m = fr->ax.step / pow(10, floor(log10(fr->ax.step) + 1e-9));
        a.step = fr->ax.step * (m < 1.5 ? 2 : m < 3 ? 2.5 : 2);
        a.t0 = ceil(a.lo / a.step - 1e-9) * a.step;
        axis_finish(&a);
        fr->ax = a;
    }
}

/* Lays out the plot area from the top coordinate and the y labels' width;
 * the x axis is given (ax) and only thinned to fit. */
static void frame_layout(frame *fr, double top, int show_x, int show_y) {
    fr->show_x = show_x;
    fr->show_y = show_y;
    double wl = show_y ? axis_label_width(&fr->ay) * CHAR_W : 0;
    fr->x0 = 34 + (wl > 18 ? wl : 18);
    fr->x1 = CW - 20;
    fr->y0 = top;
    fr->y1 = CH - 48;
    frame_fit_x(fr);
}

static void frame_draw(ef__sb *b, const frame *fr, const char *xlabel, const char *ylabel) {
    char lab[64];
    /* gridlines first, under everything */
    ef__sb_printf(b, "<g stroke=\"%s\" stroke-width=\"1\">", C_GRID);
    if (fr->show_y)
        for (int i = 0; i < fr->ay.nt; i++) {
            double y = fy(fr, axis_tick(&fr->ay, i));
            ef__sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", fr->x0, y,
                          fr->x1, y);
        }
    for (int i = 0; fr->show_x && i < fr->ax.nt; i++) {
        double x = fx(fr, axis_tick(&fr->ax, i));
        ef__sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", x, fr->y0, x,
                      fr->y1);
    }
    ef__sb_puts(b, "</g>");
    /* axes */
    ef__sb_printf(b,
                  "<path d=\"M%.1f %.1fV%.1fH%.1f\" fill=\"none\" stroke=\"%s\" stroke-width=\"1\"/>",
                  fr->x0, fr->y0, fr->y1, fr->x1, C_AXIS);
    /* tick marks and labels */
    ef__sb_printf(b, "<g fill=\"%s\" text-anchor=\"middle\">", C_MUTED);
    for (int i = 0; fr->show_x && i < fr->ax.nt; i++) {
        double t = axis_tick(&fr->ax, i), x = fx(fr, t);
        axis_label(&fr->ax, t, lab, sizeof lab);
        ef__sb_printf(b,
                      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>"
                      "<text x=\"%.1f\" y=\"%.1f\">%s</text>",
                      x, fr->y1, x, fr->y1 + 4, C_AXIS, x, fr->y1 + 17, lab);
    }
    ef__sb_puts(b, "</g>");
    if (fr->show_y) {
        ef__sb_printf(b, "<g fill=\"%s\" text-anchor=\"end\">", C_MUTED);
        for (int i = 0; i < fr->ay.nt; i++) {
            double t = axis_tick(&fr->ay, i), y = fy(fr, t);
            axis_label(&fr->ay, t, lab, sizeof lab);
            ef__sb_printf(b,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\">%s</text>",
                          fr->x0 - 4, y, fr->x0, y, C_AXIS, fr->x0 - 7, y + 3.8, lab);
        }
        ef__sb_puts(b, "</g>");
    }
    /* axis titles */
    ef__sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\">",
                  (fr->x0 + fr->x1) / 2, CH - 12);
    sb_esc(b, xlabel);
    ef__sb_puts(b, "</text>");
    ef__sb_printf(b,
                  "<text transform=\"translate(16 %.1f) rotate(-90)\" text-anchor=\"middle\" "
                  "font-size=\"13\">",
                  (fr->y0 + fr->y1) / 2);
    sb_esc(b, ylabel);
    ef__sb_puts(b, "</text>");
}

static void frame_not_measured(ef__sb *b, const frame *fr, const char *what) {
    ef__sb_printf(b,
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\" "
                  "font-style=\"italic\" fill=\"%s\">",
                  (fr->x0 + fr->x1) / 2, (fr->y0 + fr->y1) / 2, C_MUTED);
    sb_esc(b, what);
    ef__sb_puts(b, "</text>");
}

/* One data series of a line chart; NaN or infinite values are not measured
 * (the line joins the measured neighbours). */
typedef struct series_def {
    const char *name;
    const double *y; /* n values, parallel to the chart's x */
    const char *color;
    int dash, shape;
} series_def;

typedef struct line_chart {
    const char *title, *subtitle, *xlabel, *ylabel;
    const double *x; /* n values */
    size_t n;
    const series_def *s;
    int ns;
    int xflags, yflags;
    double ycap; /* top of the y axis when every value is below it (NaN: none) */
} line_chart;

static int pt_ok(double x, double y) { return isfinite(x) && isfinite(y); }

static size_t series_points(const line_chart *c, const series_def *s) {
    size_t npts = 0;
    for (size_t i = 0; i < c->n; i++) npts += pt_ok(c->x[i], s->y[i]);
    return npts;
}

static void draw_series(ef__sb *b, const frame *fr, const line_chart *c, const series_def *s) {
    size_t npts = series_points(c, s);
    int markers = npts <= MAX_MARKERS;
    /* dense series: thinner lines so neighbouring points stay apart */
    double width = npts <= 150 ? 1.8 : npts <= 400 ? 1.4 : 1.1;
    /* One polyline through every measured point: a round without a
     * measurement (evaluation every k rounds) is simply not sampled. */
    if (npts == 1 && !markers) {
        for (size_t k = 0; k < c->n; k++)
            if (pt_ok(c->x[k], s->y[k]))
                ef__sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.2\" fill=\"%s\"/>",
                              fx(fr, c->x[k]), fy(fr, s->y[k]), s->color);
    } else if (npts > 1) {
        ef__sb_printf(b,
                      "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\" "
                      "stroke-linejoin=\"round\"%s points=\"",
                      s->color, width, dash_attr(s->dash));
        int first = 1;
        for (size_t k = 0; k < c->n; k++) {
            if (!pt_ok(c->x[k], s->y[k])) continue;
            ef__sb_printf(b, "%s%.1f,%.1f", first ? "" : " ", fx(fr, c->x[k]), fy(fr, s->y[k]));
            first = 0;
        }
        ef__sb_puts(b, "\"/>");
    }
    if (markers)
        for (size_t k = 0; k < c->n; k++)
            if (pt_ok(c->x[k], s->y[k]))
                svg_marker(b, s->shape, fx(fr, c->x[k]), fy(fr, s->y[k]), s->color);
}

#define MAX_SERIES 4

static void line_chart_draw(ef__sb *b, const line_chart *c) {
    double xmn = INFINITY, xmx = -INFINITY, ymn = INFINITY, ymx = -INFINITY;
    int has[MAX_SERIES] = {0}, any = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (!isfinite(c->x[i])) continue;
        xmn = fmin(xmn, c->x[i]);
        xmx = fmax(xmx, c->x[i]);
        for (int k = 0; k < c->ns; k++) {
            double y = c->s[k].y[i];
            if (!isfinite(y)) continue;
            has[k] = any = 1;
            ymn = fmin(ymn, y);
            ymx = fmax(ymx, y);
        }
    }
    legend_item items[MAX_SERIES];
    char muted[MAX_SERIES][96];
    int ni = 0;
    for (int k = 0; k < c->ns; k++) {
        int shape = series_points(c, &c->s[k]) <= MAX_MARKERS ? c->s[k].shape : MK_NONE;
        legend_item it = {c->s[k].name, c->s[k].color, c->s[k].dash, shape, 0, 0};
        if (!any) continue; /* the whole chart says "not measured" */
        if (!has[k]) {
            snprintf(muted[k], sizeof muted[k], "%s: not measured", c->s[k].name);
            it.name = muted[k];
            it.muted = 1;
        }
        items[ni++] = it;
    }
    double top = chart_begin(b, c->title, c->subtitle, items, ni);
    frame fr;
    axis_init(&fr.ax, xmn, xmx, 9, c->xflags | AX_TIGHT);
    axis_init(&fr.ay, ymn, ymx, 6, c->yflags);
    if (isfinite(c->ycap) && fr.ay.hi > c->ycap && ymx <= c->ycap) {
        fr.ay.hi = c->ycap;
        axis_finish(&fr.ay);
    }
    frame_layout(&fr, top, xmn <= xmx, any);
    frame_draw(b, &fr, c->xlabel, c->ylabel);
    if (!any) frame_not_measured(b, &fr, "not measured");
    for (int k = 0; k < c->ns; k++)
        if (has[k]) draw_series(b, &fr, c, &c->s[k]);
    chart_end(b);
}

/* ---- report data -------------------------------------------------------- */

/* Per-round series extracted once from the records (NaN = missing). */
typedef struct report_data {
    size_t n;
    double *block;
    double *round, *acc, *fed_acc, *test_loss, *train_loss, *fed_loss;
    double *t_end, *dur, *up, *down, *eps, *st_mean, *st_max;
    int has_fed_acc, has_fed_loss, has_eps, has_stale, has_rejected;
    unit t_unit, d_unit, b_unit;
    double best_acc;
    uint32_t best_round;
    double total_up, total_down; /* bytes over all rounds */
} report_data;

static int any_finite(const double *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i])) return 1;
    return 0;
}

static double max_finite(const double *v, size_t n) {
    double m = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i]) && v[i] > m) m = v[i];
    return m;
}

static ef_status report_data_init(report_data *d, const ef_round_record *r, size_t n) {
    enum { N_SERIES = 13 };
    size_t cnt;
    memset(d, 0, sizeof *d);
    d->n = n;
    if (!ef__mul_size(n ? n : 1, N_SERIES, &cnt)) return ef__fail(EF_ERR_RANGE, "too many rounds");
    d->block = ef_calloc(cnt, sizeof(double));
    if (!d->block) return EF_ERR_NOMEM;
    size_t m = n ? n : 1;
    double **slots[N_SERIES] = {&d->round, &d->acc,  &d->fed_acc, &d->test_loss, &d->train_loss,
                                &d->fed_loss, &d->t_end, &d->dur, &d->up,     &d->down,
                                &d->eps,   &d->st_mean, &d->st_max};
    for (int k = 0; k < N_SERIES; k++) *slots[k] = d->block + (size_t)k * m;
    d->best_acc = NAN;
    int stale_max_any = 0;
    for (size_t i = 0; i < n; i++) {
        d->round[i] = r[i].round;
        d->acc[i] = r[i].test_accuracy * 100;
        d->fed_acc[i] = r[i].fed_accuracy * 100;
        d->test_loss[i] = r[i].test_loss;
        d->train_loss[i] = r[i].train_loss;
        d->fed_loss[i] = r[i].fed_loss;
        d->t_end[i] = r[i].sim_end;
        d->dur[i] = r[i].sim_end - r[i].sim_start;
        d->up[i] = (double)r[i].bytes_up;
        d->down[i] = (double)r[i].bytes_down;
        d->total_up += d->up[i];
        d->total_down += d->down[i];
        d->eps[i] = r[i].epsilon;
        d->st_mean[i] = r[i].staleness_mean;
        d->st_max[i] = r[i].staleness_max;
        stale_max_any |= r[i].staleness_max != 0;
        d->has_rejected |= r[i].rejected != 0;
        if (isfinite(r[i].test_accuracy) && !(r[i].test_accuracy <= d->best_acc)) {
            d->best_acc = r[i].test_accuracy;
            d->best_round = r[i].round;
        }
    }
    d->has_fed_acc = any_finite(d->fed_acc, n);
    d->has_fed_loss = any_finite(d->fed_loss, n);
    d->has_eps = any_finite(d->eps, n);
    d->has_stale = stale_max_any || any_finite(d->st_mean, n);
    /* scale to display units once, so ticks are nice in those units */
    d->t_unit = time_unit(max_finite(d->t_end, n));
    d->d_unit = time_unit(max_finite(d->dur, n));
    double bmax = fmax(max_finite(d->up, n), max_finite(d->down, n));
    d->b_unit = bytes_unit(bmax);
    for (size_t i = 0; i < n; i++) {
        d->t_end[i] /= d->t_unit.div;
        d->dur[i] /= d->d_unit.div;
        d->up[i] /= d->b_unit.div;
        d->down[i] /= d->b_unit.div;
    }
    return EF_OK;
}

/* ---- the charts of the report ----------------------------------------- */

static void chart_accuracy_rounds(ef__sb *b, const report_data *d) {
    series_def s[2] = {{"Test accuracy (centralized)", d->acc, C_BLUE, DASH_NONE, MK_CIRCLE},
                       {"Federated accuracy (clients)", d->fed_acc, C_ORANGE, DASH_DASHED,
                        MK_SQUARE}};
    char sub[160] = "";
    if (isfinite(d->best_acc))
        snprintf(sub, sizeof sub, "best %.2f%% at round %u", d->best_acc * 100,
                 (unsigned)d->best_round);
    line_chart c = {"Accuracy per round", sub, "Round", "Accuracy (%)", d->round, d->n, s,
                    d->has_fed_acc ? 2 : 1, AX_INT, 0, 100};
    line_chart_draw(b, &c);
}

static void chart_loss_rounds(ef__sb *b, const report_data *d) {
    series_def s[3] = {{"Test loss", d->test_loss, C_BLUE, DASH_NONE, MK_CIRCLE},
                       {"Training loss", d->train_loss, C_VERM, DASH_DASHED, MK_SQUARE},
                       {"Federated loss", d->fed_loss, C_ORANGE, DASH_DOTTED, MK_TRIANGLE}};
    line_chart c = {"Loss per round", NULL, "Round", "Loss", d->round, d->n, s,
                    d->has_fed_loss ? 3 : 2, AX_INT, 0, NAN};
    line_chart_draw(b, &c);
}

static void chart_accuracy_time(ef__sb *b, const report_data *d) {
    series_def s[2] = {{"Test accuracy (centralized)", d->acc, C_BLUE, DASH_NONE, MK_CIRCLE},
                       {"Federated accuracy (clients)", d->fed_acc, C_ORANGE, DASH_DASHED,
                        MK_SQUARE}};
    char xl[64];
    snprintf(xl, sizeof xl, "Simulated time at the end of the round (%s)", d->t_unit.name);
    line_chart c = {"Accuracy over simulated time", NULL, xl, "Accuracy (%)", d->t_end, d->n, s,
                    d->has_fed_acc ? 2 : 1, 0, 0, 100};
    line_chart_draw(b, &c);
}

static void chart_bytes(ef__sb *b, const report_data *d) {
    series_def s[2] = {{"Up (clients \xe2\x86\x92 server)", d->up, C_BLUE, DASH_NONE, MK_CIRCLE},
                       {"Down (server \xe2\x86\x92 clients)", d->down, C_ORANGE, DASH_DASHED,
                        MK_SQUARE}};
    char a[32], c2[32], sub[128], yl[64];
    fmt_bytes(a, sizeof a, d->total_up);
    fmt_bytes(c2, sizeof c2, d->total_down);
    snprintf(sub, sizeof sub, "total up %s &#183; down %s", a, c2);
    snprintf(yl, sizeof yl, "Bytes per round (%s)", d->b_unit.name);
    int yint = d->b_unit.div == 1 ? AX_INT : 0; /* no fractional bytes */
    line_chart c = {"Communication per round", sub, "Round", yl, d->round, d->n, s, 2, AX_INT,
                    AX_ZERO | yint, NAN};
    line_chart_draw(b, &c);
}

static void chart_epsilon(ef__sb *b, const report_data *d) {
    series_def s[1] = {{"Privacy budget spent", d->eps, C_PURPLE, DASH_NONE, MK_DIAMOND}};
    line_chart c = {"Differential privacy: \xce\xb5 spent", NULL, "Round", "\xce\xb5 (cumulative)",
                    d->round, d->n, s, 1, AX_INT, AX_ZERO, NAN};
    line_chart_draw(b, &c);
}

static void chart_staleness(ef__sb *b, const report_data *d) {
    series_def s[2] = {{"Mean staleness", d->st_mean, C_GREEN, DASH_NONE, MK_CIRCLE},
                       {"Max staleness", d->st_max, C_VERM, DASH_DASHED, MK_SQUARE}};
    line_chart c = {"Update staleness", NULL, "Round", "Model versions behind", d->round, d->n, s,
                    2, AX_INT, AX_ZERO, NAN};
    line_chart_draw(b, &c);
}

/* Stacked bars of what became of the selected clients, per round (or the
 * mean per round over groups of rounds when there are too many to see). */
static ef_status chart_participation(ef__sb *b, const report_data *d, const ef_round_record *r) {
    size_t n = d->n, k = (n + MAX_BARS - 1) / MAX_BARS, ng = (n + k - 1) / k;
    enum { CAT = 5 };
    double *v = ef_calloc(ng * CAT + ng, sizeof(double));
    if (!v) return EF_ERR_NOMEM;
    double *xc = v + ng * CAT;
    double ymax = 0, xmn = INFINITY, xmx = -INFINITY;
    int has_other = 0;
    for (size_t g = 0; g < ng; g++) {
        size_t a = g * k, e = a + k < n ? a + k : n;
        double sel = 0, sum[4] = {0}, rs = 0;
        for (size_t i = a; i < e; i++) {
            sel += r[i].selected;
            sum[0] += r[i].completed;
            sum[1] += r[i].late;
            sum[2] += r[i].rejected;
            sum[3] += r[i].dropped;
            rs += r[i].round;
        }
        double cnt = (double)(e - a), tot = 0;
        for (int c = 0; c < 4; c++) tot += v[g * CAT + c] = sum[c] / cnt;
        double other = sel / cnt - tot;
        v[g * CAT + 4] = other > 1e-9 ? other : 0;
        has_other |= other > 1e-9;
        ymax = fmax(ymax, fmax(sel / cnt, tot));
        xc[g] = rs / cnt;
        xmn = fmin(xmn, xc[g]);
        xmx = fmax(xmx, xc[g]);
    }
    static const char *names[CAT] = {"Completed", "Late", "Rejected", "Dropped",
                                     "Selected, no outcome"};
    static const char *colors[CAT] = {C_GREEN, C_ORANGE, C_PURPLE, C_VERM, C_GRAYBAR};
    legend_item items[CAT];
    int ni = 0;
    for (int c = 0; c < CAT; c++) {
        if ((c == 2 && !d->has_rejected) || (c == 4 && !has_other)) continue;
        items[ni++] = (legend_item){names[c], colors[c], 0, 0, 1, 0};
    }
    if (ymax <= 0) ni = 0; /* nothing to tell apart */
    char sub[96] = "";
    if (k > 1) snprintf(sub, sizeof sub, "mean per round over groups of %zu rounds", k);
    double top = chart_begin(b, "Participation per round", sub, items, ni);
    frame fr;
    double half = 0.5 * (double)k;
    axis_init(&fr.ax, xmn - half, xmx + half, 9, AX_INT | AX_TIGHT);
    axis_init(&fr.ay, 0, ymax, 6, AX_INT | AX_ZERO);
    frame_layout(&fr, top, 1, 1);
    frame_draw(b, &fr, "Round", "Clients");
    if (ymax <= 0) frame_not_measured(b, &fr, "no clients selected");
    double slot = (fr.x1 - fr.x0) * (double)k / (fr.ax.hi - fr.ax.lo);
    double bw = fmin(slot * (ng > 60 ? 0.9 : 0.75), 48);
    for (size_t g = 0; g < ng; g++) {
        double base = 0, cx = fx(&fr, xc[g]);
        for (int c = 0; c < CAT; c++) {
            double h = v[g * CAT + c];
            if (h <= 0) continue;
            double ya = fy(&fr, base), yb = fy(&fr, base + h);
            ef__sb_printf(b,
                          "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"/>",
                          cx - bw / 2, yb, bw, ya - yb, colors[c]);
            base += h;
        }
    }
    chart_end(b);
    ef_free(v);
    return EF_OK;
}

static int cmp_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b2 = *(const double *)pb;
    return (a > b2) - (a < b2);
}

/* Linear-interpolated quantile of sorted values (numpy's default method). */
static double quantile(const double *s, size_t m, double q) {
    double pos = q * (double)(m - 1);
    size_t i = (size_t)floor(pos);
    if (i + 1 >= m) return s[m - 1];
    return s[i] + (pos - (double)i) * (s[i + 1] - s[i]);
}

/* Histogram of round durations with bins on nice boundaries (Sturges'
 * bin count, 5..30), and p50 / p90 / max in the subtitle. */
static ef_status chart_durations(ef__sb *b, const report_data *d) {
    size_t m = 0;
    double *s = ef_malloc((d->n ? d->n : 1) * sizeof(double));
    if (!s) return EF_ERR_NOMEM;
    for (size_t i = 0; i < d->n; i++)
        if (isfinite(d->dur[i])) s[m++] = clampd(d->dur[i], -AXIS_LIMIT, AXIS_LIMIT);
    const char *title = "Round duration (simulated)";
    char xl[64];
    snprintf(xl, sizeof xl, "Duration (%s)", d->d_unit.name);
    if (m == 0) {
        double top = chart_begin(b, title, NULL, NULL, 0);
        frame fr;
        axis_init(&fr.ax, 0, 1, 6, 0);
        axis_init(&fr.ay, 0, 1, 6, 0);
        frame_layout(&fr, top, 0, 0);
        frame_draw(b, &fr, xl, "Rounds");
        frame_not_measured(b, &fr, "not measured");
        chart_end(b);
        ef_free(s);
        return EF_OK;
    }
    qsort(s, m, sizeof *s, cmp_double);
    double mn = s[0], mx = s[m - 1];
    int target = (int)clampd(ceil(log2((double)m)) + 1, 5, 30);
    double step, lo;
    size_t nb;
    if (mx - mn <= fmax(fabs(mn), fabs(mx)) * 1e-9) {
        /* one value: a single bar between two empty bins */
        step = nice_num(mn != 0 ? fabs(mn) * 0.1 : 1, 1);
        lo = floor(mn / step + 1e-9) * step - step;
        nb = 3;
    } else {
        step = nice_num((mx - mn) / target, 1);
        lo = floor(mn / step + 1e-9) * step;
        double bins = ceil((mx - lo) / step - 1e-9);
        nb = bins < 1 ? 1 : (size_t)bins;
    }
    size_t *cnt = ef_calloc(nb, sizeof *cnt);
    if (!cnt) {
        ef_free(s);
        return EF_ERR_NOMEM;
    }
    size_t cmax = 0;
    for (size_t i = 0; i < m; i++) {
        double t = floor((s[i] - lo) / step);
        size_t bi = t < 0 ? 0 : t >= (double)nb ? nb - 1 : (size_t)t;
        if (++cnt[bi] > cmax) cmax = cnt[bi];
    }
    char p50[40], p90[40], pmax[40], sub[200];
    fmt_3sig(p50, sizeof p50, quantile(s, m, 0.5), d->d_unit.name);
    fmt_3sig(p90, sizeof p90, quantile(s, m, 0.9), d->d_unit.name);
    fmt_3sig(pmax, sizeof pmax, mx, d->d_unit.name);
    snprintf(sub, sizeof sub, "p50 %s &#183; p90 %s &#183; max %s &#183; %zu round%s", p50, p90,
             pmax, m, m == 1 ? "" : "s");
    double top = chart_begin(b, title, sub, NULL, 0);
    frame fr;
    fr.ax.lo = fr.ax.t0 = lo;
    fr.ax.hi = lo + step * (double)nb;
    fr.ax.step = step;
    axis_finish(&fr.ax);
    axis_init(&fr.ay, 0, (double)cmax, 6, AX_INT | AX_ZERO);
    frame_layout(&fr, top, 1, 1);
    frame_draw(b, &fr, xl, "Rounds");
    for (size_t i = 0; i < nb; i++) {
        if (!cnt[i]) continue;
        double xa = fx(&fr, lo + step * (double)i), xb = fx(&fr, lo + step * (double)(i + 1));
        double ya = fy(&fr, (double)cnt[i]);
        ef__sb_printf(b,
                      "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\" "
                      "fill-opacity=\"0.85\" stroke=\"#ffffff\" stroke-width=\"1\"/>",
                      xa, ya, xb - xa, fr.y1 - ya, C_BLUE);
    }
    chart_end(b);
    ef_free(cnt);
    ef_free(s);
    return EF_OK;
}

/* ---- page sections ------------------------------------------------------ */

static const char *CSS =
    "*{box-sizing:border-box}\n"
    "body{margin:0;background:#f6f7f9;color:#24292f;font:15px/1.5 system-ui,-apple-system,"
    "'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif}\n"
    "main{max-width:1320px;margin:0 auto;padding:28px 28px 36px}\n"
    ".kicker{margin:0;color:#6e7781;font-size:12px;letter-spacing:.08em;text-transform:uppercase}\n"
    "h1{font-size:24px;line-height:1.25;margin:4px 0 2px;overflow-wrap:anywhere}\n"
    "h2{font-size:17px;margin:28px 0 10px}\n"
    ".sub{margin:0;color:#6e7781}\n"
    ".cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(158px,1fr));gap:12px;"
    "margin:20px 0 0;padding:0}\n"
    ".card{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:10px 14px}\n"
    ".card dt{color:#6e7781;font-size:12.5px}\n"
    ".card dd{margin:2px 0 0;font-size:20px;font-weight:600;font-variant-numeric:tabular-nums;"
    "white-space:nowrap}\n"
    ".card dd small{display:block;font-size:12.5px;font-weight:400;color:#6e7781}\n"
    "pre{margin:0;background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:12px 14px;"
    "font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,'DejaVu Sans Mono',monospace;"
    "overflow:auto;max-height:30em;white-space:pre-wrap;overflow-wrap:anywhere}\n"
    ".charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(500px,100%),1fr));"
    "gap:16px}\n"
    "figure{margin:0;background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:6px}\n"
    "figure svg{display:block;width:100%;height:auto}\n"
    ".empty{background:#fff;border:1px dashed #d8dee4;border-radius:8px;padding:24px;"
    "color:#6e7781;text-align:center}\n"
    "details{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:10px 14px}\n"
    "summary{cursor:pointer;font-weight:600}\n"
    ".tbl{overflow:auto;max-height:40em;margin-top:10px}\n"
    "table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}\n"
    "th,td{padding:3px 7px;border-bottom:1px solid #eaeef2;text-align:right;white-space:nowrap}\n"
    "th{position:sticky;top:0;background:#f6f8fa;font-weight:600}\n"
    "tbody tr:nth-child(even){background:#fafbfc}\n"
    "footer{margin-top:28px;color:#6e7781;font-size:12.5px}\n"
    "@media print{body{background:#fff}main{max-width:none;padding:0}"
    "pre,.tbl{max-height:none;overflow:visible}figure,.card{break-inside:avoid}}\n";

static void card(ef__sb *b, const char *label, const char *value, const char *note) {
    ef__sb_puts(b, "<div class=\"card\"><dt>");
    sb_esc(b, label);
    ef__sb_printf(b, "</dt><dd>%s", value);
    if (note && *note) ef__sb_printf(b, " <small>%s</small>", note);
    ef__sb_puts(b, "</dd></div>\n");
}

static void summary_cards(ef__sb *b, const ef_run_summary *s, const report_data *d,
                          const ef_round_record *r) {
    char v[64], note[96];
    ef__sb_puts(b, "<dl class=\"cards\">\n");
    if (isfinite(s->final_accuracy)) snprintf(v, sizeof v, "%.2f%%", s->final_accuracy * 100);
    else snprintf(v, sizeof v, "&#8212;");
    card(b, "Final test accuracy", v, NULL);
    if (isfinite(d->best_acc)) {
        snprintf(v, sizeof v, "%.2f%%", d->best_acc * 100);
        snprintf(note, sizeof note, "round %u", (unsigned)d->best_round);
        card(b, "Best test accuracy", v, note);
    }
    snprintf(v, sizeof v, "%u", (unsigned)s->rounds);
    card(b, "Rounds", v, NULL);
    fmt_duration(v, sizeof v, s->sim_time_s);
    card(b, "Simulated time", v, NULL);
    fmt_duration(v, sizeof v, s->wall_s);
    card(b, "Wall time", v, NULL);
    fmt_bytes(v, sizeof v, (double)s->bytes_up);
    card(b, "Bytes up", v, NULL);
    fmt_bytes(v, sizeof v, (double)s->bytes_down);
    card(b, "Bytes down", v, NULL);
    if (isfinite(s->peak_rss_mb) && s->peak_rss_mb > 0) {
        snprintf(v, sizeof v, "%.0f MiB", s->peak_rss_mb);
        card(b, "Peak RSS", v, NULL);
    }
    double sel = 0, done = 0;
    for (size_t i = 0; i < d->n; i++) sel += r[i].selected, done += r[i].completed;
    if (sel > 0) {
        snprintf(v, sizeof v, "%.1f%%", 100 * done / sel);
        snprintf(note, sizeof note, "of %.0f selected", sel);
        card(b, "Updates accepted", v, note);
    }
    if (d->has_eps) {
        double last = NAN;
        for (size_t i = 0; i < d->n; i++)
            if (isfinite(d->eps[i])) last = d->eps[i];
        snprintf(v, sizeof v, "%.3g", last);
        card(b, "Privacy spent (\xce\xb5)", v, NULL);
    }
    ef__sb_puts(b, "</dl>\n");
}

static void td_num(ef__sb *b, const char *fmt, double v) {
    if (!isfinite(v)) {
        ef__sb_puts(b, "<td>&#8212;</td>");
        return;
    }
    char t[64];
    snprintf(t, sizeof t, fmt, v);
    ef__sb_printf(b, "<td>%s</td>", t);
}

static void td_bytes(ef__sb *b, uint64_t v) {
    char t[32];
    fmt_bytes(t, sizeof t, (double)v);
    ef__sb_printf(b, "<td>%s</td>", t);
}

static void round_table(ef__sb *b, const report_data *d, const ef_round_record *r) {
    ef__sb_printf(b,
                  "<h2>Rounds</h2>\n<details><summary>Per-round metrics (%zu round%s)</summary>\n",
                  d->n, d->n == 1 ? "" : "s");
    ef__sb_puts(b, "<div class=\"tbl\"><table>\n<thead><tr><th>Round</th>");
    ef__sb_printf(b, "<th>End (%s)</th><th>Duration (%s)</th>", d->t_unit.name, d->d_unit.name);
    ef__sb_puts(b, "<th>Selected</th><th>Done</th><th>Late</th><th>Drop.</th>");
    if (d->has_rejected) ef__sb_puts(b, "<th>Rej.</th>");
    ef__sb_puts(b, "<th>Agg.</th><th>Train loss</th><th>Test acc. (%)</th><th>Test loss</th>");
    if (d->has_fed_acc) ef__sb_puts(b, "<th>Fed. acc. (%)</th>");
    if (d->has_fed_loss) ef__sb_puts(b, "<th>Fed. loss</th>");
    ef__sb_puts(b, "<th>Up</th><th>Down</th>");
    if (d->has_eps) ef__sb_puts(b, "<th>&#949;</th>");
    if (d->has_stale) ef__sb_puts(b, "<th>Stale mean</th><th>Stale max</th>");
    ef__sb_puts(b, "</tr></thead>\n<tbody>\n");
    for (size_t i = 0; i < d->n && !b->oom; i++) {
        const ef_round_record *x = &r[i];
        ef__sb_printf(b, "<tr><td>%u</td>", (unsigned)x->round);
        td_num(b, "%.2f", d->t_end[i]);
        td_num(b, "%.2f", d->dur[i]);
        ef__sb_printf(b, "<td>%u</td><td>%u</td><td>%u</td><td>%u</td>", (unsigned)x->selected,
                      (unsigned)x->completed, (unsigned)x->late, (unsigned)x->dropped);
        if (d->has_rejected) ef__sb_printf(b, "<td>%u</td>", (unsigned)x->rejected);
        ef__sb_puts(b, x->aggregated ? "<td>yes</td>" : "<td>no</td>");
        td_num(b, "%.4f", x->train_loss);
        td_num(b, "%.2f", d->acc[i]);
        td_num(b, "%.4f", x->test_loss);
        if (d->has_fed_acc) td_num(b, "%.2f", d->fed_acc[i]);
        if (d->has_fed_loss) td_num(b, "%.4f", x->fed_loss);
        td_bytes(b, x->bytes_up);
        td_bytes(b, x->bytes_down);
        if (d->has_eps) td_num(b, "%.4g", x->epsilon);
        if (d->has_stale) {
            td_num(b, "%.2f", x->staleness_mean);
            ef__sb_printf(b, "<td>%u</td>", (unsigned)x->staleness_max);
        }
        ef__sb_puts(b, "</tr>\n");
    }
    ef__sb_puts(b, "</tbody></table></div></details>\n");
}

static ef_status build_report(ef__sb *b, const ef_run_summary *s, const ef_round_record *r,
                              size_t n) {
    const char *title = s->title && *s->title ? s->title : "edgefl run";
    report_data d;
    ef_status st = report_data_init(&d, r, n);
    if (st != EF_OK) return st;
    ef__sb_puts(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                   "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                   "<meta name=\"generator\" content=\"edgefl " EF_VERSION_STRING "\">\n<title>");
    sb_esc(b, title);
    ef__sb_printf(b,
                  " &#8212; edgefl report</title>\n<style>\n%s</style>\n</head>\n<body>\n<main>\n",
                  CSS);
    ef__sb_puts(b, "<header>\n<p class=\"kicker\">edgefl federated learning report</p>\n<h1>");
    sb_esc(b, title);
    ef__sb_printf(b, "</h1>\n<p class=\"sub\">%zu round record%s</p>\n</header>\n", n,
                  n == 1 ? "" : "s");
    summary_cards(b, s, &d, r);
    if (s->config_json && *s->config_json) {
        ef__sb_puts(b, "<h2>Configuration</h2>\n<pre>");
        sb_json_pretty(b, s->config_json);
        ef__sb_puts(b, "</pre>\n");
    }
    ef__sb_puts(b, "<h2>Charts</h2>\n");
    if (n == 0) {
        ef__sb_puts(b, "<p class=\"empty\">No rounds were recorded, so there is nothing to "
                       "chart.</p>\n");
    } else {
        ef__sb_puts(b, "<div class=\"charts\">\n");
        chart_accuracy_rounds(b, &d);
        chart_loss_rounds(b, &d);
        chart_accuracy_time(b, &d);
        st = chart_participation(b, &d, r);
        if (st == EF_OK) {
            chart_bytes(b, &d);
            st = chart_durations(b, &d);
        }
        if (st == EF_OK && d.has_eps) chart_epsilon(b, &d);
        if (st == EF_OK && d.has_stale) chart_staleness(b, &d);
        ef__sb_puts(b, "</div>\n");
        if (st == EF_OK) round_table(b, &d, r);
    }
    ef__sb_puts(b, "<footer>Generated by edgefl " EF_VERSION_STRING
                   ". Accuracy and loss lines join the rounds where they were measured. Bytes use decimal units (1 MB = 10<sup>6</sup> bytes); "
                   "memory uses MiB (2<sup>20</sup> bytes).</footer>\n</main>\n</body>\n</html>\n");
    ef_free(d.block);
    if (st == EF_OK && b->oom) st = ef__fail(EF_ERR_NOMEM, "out of memory building the report");
    return st;
}

ef_status ef_report_write_html(const char *path, const ef_run_summary *summary,
                               const ef_round_record *rounds, size_t n_rounds) {
    if (!path || !*path || !summary || (n_rounds > 0 && !rounds))
        return ef__fail(EF_ERR_INVALID, "ef_report_write_html: NULL argument");
    ef__sb b = {0};
    ef_atomic_file *f = NULL;
    c_numeric loc;
    c_numeric_enter(&loc);
    ef_status st = build_report(&b, summary, rounds, n_rounds);
    c_numeric_leave(&loc);
    if (st != EF_OK) goto fail;
    st = ef_atomic_open(&f, path);
    if (st != EF_OK) goto fail;
    st = ef_atomic_write(f, b.p, b.len);
    if (st != EF_OK) goto fail;
    st = ef_atomic_commit(f); /* frees f whatever the outcome */
    f = NULL;
    if (st != EF_OK) goto fail;
    ef_free(b.p);
    return EF_OK;

fail:
    ef_atomic_abort(f);
    ef_free(b.p);
    return st;
}
