/*
 * Tests of the metrics outputs. JSON lines: values round-trip exactly,
 * non-finite fields are omitted, wall time only on request, and Python's json
 * module accepts every line. HTML report: for a realistic synthetic 100-round
 * run the page is one self-contained file (no scripts, no URLs, no external
 * sources), each inline SVG is well-formed XML and the whole page has balanced
 * tags (checked with Python's xml.etree and html.parser when /usr/bin/python3
 * exists), user text is escaped, output is byte-identical across calls, edge
 * cases (0 and 1 rounds, nothing measured, flat and huge values) render, and
 * failures (missing directory, out of memory) leave no file behind. One
 * example report is kept in the build directory for people to look at.
 */
#include <dirent.h>
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "edgefl/io.h"
#include "edgefl/metrics.h"
#include "test_util.h"

static char g_dir[256];
static int g_python; /* /usr/bin/python3 is there for the format checks */

static const char *tpath(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

/* Validates JSON lines (mode json) or a report (mode html) with the Python
 * standard library; exits non-zero with a message on the first problem. */
static const char *CHECKER =
    "import sys, re, json\n"
    "from html.parser import HTMLParser\n"
    "import xml.etree.ElementTree as ET\n"
    "mode = sys.argv[1]\n"
    "if mode == 'json':\n"
    "    text = open(sys.argv[2], encoding='utf-8').read()\n"
    "    assert text.endswith('\\n'), 'missing final newline'\n"
    "    objs = [json.loads(l) for l in text[:-1].split('\\n')]\n"
    "    for e in open(sys.argv[3]).read().split('\\n'):\n"
    "        if not e: continue\n"
    "        i, key, kind, val = e.split(' ')\n"
    "        o = objs[int(i)]\n"
    "        if kind == 'absent': assert key not in o, (i, key, 'present')\n"
    "        elif kind == 'f':\n"
    "            assert type(o[key]) in (int, float), (i, key)\n"
    "            assert float(o[key]) == float.fromhex(val), (i, key, o[key], val)\n"
    "        elif kind == 'i':\n"
    "            assert type(o[key]) is int and o[key] == int(val), (i, key, o[key])\n"
    "        elif kind == 'b': assert o[key] is (val == 'true'), (i, key, o[key])\n"
    "        elif kind == 'keys': assert list(o) == val.split(','), (i, list(o))\n"
    "        else: raise AssertionError('bad expectation ' + e)\n"
    "else:\n"
    "    doc = open(sys.argv[2], encoding='utf-8').read()\n"
    "    want = int(sys.argv[3])\n"
    "    blocks = re.findall(r'<svg\\b.*?</svg>', doc, re.S)\n"
    "    assert len(blocks) == want, ('svg blocks', len(blocks), want)\n"
    "    for b in blocks: ET.fromstring(b)\n"
    "    bad = re.search(r'=\"[^\"]*\\b(nan|inf)', doc, re.I)\n"
    "    assert not bad, ('non-finite number in an attribute', bad and bad.group(0))\n"
    "    VOID = {'meta', 'br', 'hr', 'img', 'input', 'link', 'wbr', 'col', 'area', 'base'}\n"
    "    class P(HTMLParser):\n"
    "        def __init__(s):\n"
    "            super().__init__(convert_charrefs=True); s.stack = []\n"
    "        def handle_starttag(s, tag, attrs):\n"
    "            if tag not in VOID: s.stack.append(tag)\n"
    "        def handle_startendtag(s, tag, attrs): pass\n"
    "        def handle_endtag(s, tag):\n"
    "            assert s.stack and s.stack[-1] == tag, \\\n"
    "                ('unbalanced', tag, s.getpos(), s.stack[-3:])\n"
    "            s.stack.pop()\n"
    "    p = P(); p.feed(doc); p.close()\n"
    "    assert not p.stack, ('unclosed', p.stack)\n";

/* Runs the checker; returns 1 when it passed (or Python is absent). */
static int py_check(const char *args) {
    if (!g_python) return 1;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s", tpath("check.py"), args);
    int rc = system(cmd);
    return rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}

static char *slurp(const char *path, size_t *len) {
    char *data = NULL;
    size_t n = 0;
    if (ef_read_file(path, 0, &data, &n) != EF_OK) return NULL;
    if (len) *len = n;
    return data;
}

static int count_str(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

/* Entries in g_dir whose name contains `part`. */
static int count_entries(const char *part) {
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strstr(e->d_name, part)) n++;
    if (d) closedir(d);
    return n;
}

/* ---- JSON lines ---------------------------------------------------------- */

/* Appends "line key f <hex>" so Python compares the exact double. */
static void expect_f(FILE *e, int line, const char *key, double v) {
    fprintf(e, "%d %s f %a\n", line, key, v);
}

static void test_json_lines(void) {
    const char *jp = tpath("rounds.jsonl"), *ep = tpath("expect.txt");
    FILE *f = fopen(jp, "w"), *e = fopen(ep, "w");
    CHECK(f && e);
    if (!f || !e) return;

    /* 0: every field set, awkward doubles */
    ef_round_record a = ef_round_record_empty(7);
    a.sim_start = 0.1;
    a.sim_end = 1.0 / 3.0;
    a.wall_s = 2.5;
    a.selected = 10;
    a.completed = 7;
    a.dropped = 1;
    a.late = 1;
    a.rejected = 1;
    a.aggregated = 1;
    a.train_loss = 1e-300;
    a.test_accuracy = 0.9;
    a.test_loss = 1.7976931348623157e308;
    a.fed_accuracy = 4.9406564584124654e-324; /* smallest subnormal */
    a.fed_loss = -0.0;
    a.bytes_up = UINT64_MAX;
    a.bytes_down = 123456789012ull;
    a.staleness_mean = 2.0 / 7.0;
    a.staleness_max = 4294967295u;
    a.epsilon = 3.0e-17;
    CHECK_OK(ef_round_record_write_json(f, &a, 1));
    /* 1: the empty record: NaNs omitted, counts written */
    ef_round_record b = ef_round_record_empty(8);
    CHECK_OK(ef_round_record_write_json(f, &b, 1));
    /* 2: wall time left out on request; infinities omitted like NaN */
    ef_round_record c = a;
    c.round = 9;
    c.aggregated = 0;
    c.test_loss = INFINITY;
    c.train_loss = -INFINITY;
    CHECK_OK(ef_round_record_write_json(f, &c, 0));
    fclose(f);

    fprintf(e, "0 - keys round,sim_start,sim_end,wall_s,selected,completed,dropped,late,"
               "rejected,aggregated,train_loss,test_accuracy,test_loss,fed_accuracy,fed_loss,"
               "bytes_up,bytes_down,staleness_mean,staleness_max,epsilon\n");
    expect_f(e, 0, "sim_start", a.sim_start);
    expect_f(e, 0, "sim_end", a.sim_end);
    expect_f(e, 0, "wall_s", a.wall_s);
    expect_f(e, 0, "train_loss", a.train_loss);
    expect_f(e, 0, "test_accuracy", a.test_accuracy);
    expect_f(e, 0, "test_loss", a.test_loss);
    expect_f(e, 0, "fed_accuracy", a.fed_accuracy);
    expect_f(e, 0, "staleness_mean", a.staleness_mean);
    expect_f(e, 0, "epsilon", a.epsilon);
    fprintf(e, "0 round i 7\n0 aggregated b true\n0 bytes_up i 18446744073709551615\n"
               "0 bytes_down i 123456789012\n0 staleness_max i 4294967295\n");
    fprintf(e, "1 - keys round,selected,completed,dropped,late,rejected,aggregated,bytes_up,"
               "bytes_down,staleness_max\n1 aggregated b false\n");
    fprintf(e, "2 wall_s absent -\n2 test_loss absent -\n2 train_loss absent -\n"
               "2 aggregated b false\n");
    expect_f(e, 2, "sim_end", c.sim_end);
    fclose(e);

    size_t len = 0;
    char *text = slurp(jp, &len);
    CHECK(text != NULL);
    if (!text) return;
    CHECK(count_str(text, "\n") == 3);
    CHECK(strstr(text, "\"test_accuracy\":0.9,") != NULL); /* shortest exact form */
    CHECK(strstr(text, "nan") == NULL && strstr(text, "inf") == NULL);
    CHECK(strstr(text, "{\"round\":8,\"selected\":0,") != NULL);

    /* Exact round trip, independently of Python, through cJSON (strtod). */
    char *line = text;
    const ef_round_record *want[3] = {&a, &b, &c};
    for (int i = 0; i < 3; i++) {
        char *nl = strchr(line, '\n');
        CHECK(nl != NULL);
        if (!nl) break;
        *nl = '\0';
        cJSON *o = cJSON_Parse(line);
        CHECK_MSG(o != NULL, "line %d does not parse: %s", i, line);
        if (o) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "round");
            CHECK(cJSON_IsNumber(v) && v->valuedouble == want[i]->round);
            if (i == 0) {
                double got[] = {
                    cJSON_GetObjectItem(o, "sim_start")->valuedouble,
                    cJSON_GetObjectItem(o, "sim_end")->valuedouble,
                    cJSON_GetObjectItem(o, "test_accuracy")->valuedouble,
                    cJSON_GetObjectItem(o, "test_loss")->valuedouble,
                    cJSON_GetObjectItem(o, "fed_accuracy")->valuedouble,
                    cJSON_GetObjectItem(o, "staleness_mean")->valuedouble,
                };
                double exp[] = {a.sim_start,   a.sim_end,      a.test_accuracy,
                                a.test_loss,   a.fed_accuracy, a.staleness_mean};
                for (size_t k = 0; k < sizeof got / sizeof got[0]; k++)
                    CHECK_MSG(memcmp(&got[k], &exp[k], sizeof got[k]) == 0, "field %zu: %a != %a",
                              k, got[k], exp[k]);
                CHECK(cJSON_IsTrue(cJSON_GetObjectItem(o, "aggregated")));
                CHECK(cJSON_GetObjectItem(o, "wall_s") != NULL);
            } else {
                CHECK(cJSON_GetObjectItem(o, "wall_s") == NULL);
                CHECK(cJSON_IsFalse(cJSON_GetObjectItem(o, "aggregated")));
            }
            if (i == 1) CHECK(cJSON_GetArraySize(o) == 10);
            cJSON_Delete(o);
        }
        line = nl + 1;
    }
    ef_free(text);

    char args[1200];
    snprintf(args, sizeof args, "json %s %s", jp, ep);
    CHECK_MSG(py_check(args), "python json check of %s", jp);

    /* Errors: bad arguments, and a stream that cannot take the bytes. */
    CHECK(ef_round_record_write_json(NULL, &a, 0) == EF_ERR_INVALID);
    FILE *full = fopen("/dev/full", "w");
    if (full) {
        setvbuf(full, NULL, _IONBF, 0);
        CHECK(ef_round_record_write_json(full, &a, 0) == EF_ERR_IO);
        CHECK(strstr(ef_last_error(), "round 7") != NULL);
        fclose(full);
    }
}

/* ---- synthetic runs ------------------------------------------------------ */

static uint64_t g_rng;
static double urand(void) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}

enum { RUN_FED = 1, RUN_DP = 2, RUN_STALE = 4 };

/* A plausible FedAvg run: accuracy rising with noise and a few rounds without
 * evaluation, dropped and late clients, durations that vary with stragglers. */
static void make_run(ef_round_record *r, size_t n, int flags, ef_run_summary *s) {
    g_rng = 42;
    double t = 0;
    uint64_t up = 0, down = 0;
    const uint64_t model_bytes = 431080;
    for (size_t i = 0; i < n; i++) {
        double k = (double)(i + 1);
        ef_round_record x = ef_round_record_empty((uint32_t)(i + 1));
        x.selected = 20;
        x.dropped = urand() < 0.3 ? 1 + (uint32_t)(urand() * 3) : 0;
        x.late = urand() < 0.25 ? 1 + (uint32_t)(urand() * 2) : 0;
        x.rejected = i % 17 == 5 ? 1 : 0;
        x.completed = x.selected - x.dropped - x.late - x.rejected;
        x.aggregated = x.completed > 0;
        double dur = 25 + 30 * urand() + (x.late ? 35 * urand() : 0);
        x.sim_start = t;
        t += dur;
        x.sim_end = t;
        x.wall_s = 0.4 + urand();
        x.train_loss = 2.0 * exp(-k / 15) + 0.08 + 0.04 * (urand() - 0.5);
        if (i % 13 != 7) {
            x.test_accuracy = 0.93 - 0.83 * exp(-k / 16) + 0.025 * (urand() - 0.5);
            x.test_loss = 2.1 * exp(-k / 18) + 0.22 + 0.05 * (urand() - 0.5);
        }
        if (flags & RUN_FED) {
            x.fed_accuracy = x.test_accuracy - 0.04 + 0.03 * (urand() - 0.5);
            x.fed_loss = x.test_loss + 0.12;
        }
        x.bytes_up = x.completed * model_bytes;
        x.bytes_down = x.selected * model_bytes;
        if (flags & RUN_DP) x.epsilon = 0.12 * sqrt(k);
        if (flags & RUN_STALE) {
            x.staleness_mean = 3 * urand();
            x.staleness_max = (uint32_t)(x.staleness_mean * 2) + 1;
        }
        up += x.bytes_up;
        down += x.bytes_down;
        r[i] = x;
    }
    memset(s, 0, sizeof *s);
    s->title = "FedAvg, cnn, 100 clients, dirichlet:0.5";
    s->config_json =
        "{\"strategy\":\"fedavg\",\"model\":\"cnn\",\"dataset\":{\"name\":\"mnist\","
        "\"partition\":\"dirichlet:0.5\",\"clients\":100},\"rounds\":100,"
        "\"clients_per_round\":20,\"local\":{\"epochs\":1,\"batch\":32,\"lr\":0.05,"
        "\"momentum\":0.9},\"deadline_s\":60,\"layers\":[32,64,128],\"dp\":{\"clip\":1.0,"
        "\"noise_multiplier\":1.1,\"delta\":1e-5},\"note\":\"a < b && c > d, \\\"quoted\\\"\","
        "\"seed\":1}";
    s->rounds = (uint32_t)n;
    s->final_accuracy = n ? r[n - 1].test_accuracy : NAN;
    s->sim_time_s = t;
    s->wall_s = 83.4;
    s->bytes_up = up;
    s->bytes_down = down;
    s->peak_rss_mb = 212.6;
}

/* True if an attribute value starts like "12,5": a number printed with a
 * decimal comma (coordinates use points; "x,y" pairs start "12.5,"). */
static int has_decimal_comma(const char *html) {
    for (const char *p = html; (p = strstr(p, "=\"")) != NULL;) {
        p += 2;
        if (*p == '-') p++;
        const char *q = p;
        while (*q >= '0' && *q <= '9') q++;
        if (q > p && *q == ',') return 1;
    }
    return 0;
}

/* Writes a report and runs the generic checks; returns the text (ef_free). */
static char *report_checked(const char *name, const ef_run_summary *s, const ef_round_record *r,
                            size_t n, int want_svgs) {
    const char *p = tpath(name);
    ef_status st = ef_report_write_html(p, s, r, n);
    CHECK_MSG(st == EF_OK, "%s: %s", name, ef_last_error());
    if (st != EF_OK) return NULL;
    char *html = slurp(p, NULL);
    CHECK(html != NULL);
    if (!html) return NULL;
    CHECK_MSG(strncmp(html, "<!DOCTYPE html>", 15) == 0, "%s: doctype", name);
    CHECK_MSG(count_str(html, "<svg") == want_svgs, "%s: %d svg, want %d", name,
              count_str(html, "<svg"), want_svgs);
    CHECK_MSG(count_str(html, "</svg>") == want_svgs, "%s: closing svg tags", name);
    CHECK_MSG(strstr(html, "<script") == NULL, "%s: has a script", name);
    CHECK_MSG(strstr(html, "http://") == NULL && strstr(html, "https://") == NULL,
              "%s: has a URL", name);
    CHECK_MSG(strstr(html, "src=") == NULL && strstr(html, "url(") == NULL &&
                  strstr(html, "@import") == NULL && strstr(html, "<link") == NULL,
              "%s: has an external resource", name);
    CHECK_MSG(strstr(html, "</html>\n") != NULL, "%s: complete", name);
    CHECK_MSG(!has_decimal_comma(html), "%s: decimal comma in an attribute", name);
    char args[1200];
    snprintf(args, sizeof args, "html %s %d", p, want_svgs);
    CHECK_MSG(py_check(args), "python check of %s", name);
    return html;
}

static void test_report_realistic(void) {
    enum { N = 100 };
    static ef_round_record r[N];
    ef_run_summary s;
    make_run(r, N, RUN_FED | RUN_DP, &s);
    /* 6 charts + epsilon */
    char *html = report_checked("run.html", &s, r, N, 7);
    if (html) {
        CHECK(strstr(html, "<title>FedAvg, cnn, 100 clients, dirichlet:0.5") != NULL);
        CHECK(strstr(html, "<h2>Configuration</h2>") != NULL);
        CHECK(strstr(html, "&quot;strategy&quot;: &quot;fedavg&quot;") != NULL);
        CHECK(strstr(html, "a &lt; b &amp;&amp; c &gt; d") != NULL);
        CHECK(strstr(html, "[32, 64, 128]") != NULL); /* short arrays stay on a line */
        CHECK(strstr(html, "<details>") != NULL);
        CHECK(count_str(html, "<tr><td>") == N);
        CHECK(strstr(html, "Peak RSS") != NULL && strstr(html, "213 MiB") != NULL);
        CHECK(strstr(html, "p50 ") != NULL && strstr(html, "p90 ") != NULL);
        CHECK(strstr(html, "Staleness") == NULL); /* none in this run */
        CHECK(strstr(html, "not measured") == NULL);
    }

    /* Same inputs, same bytes. */
    CHECK_OK(ef_report_write_html(tpath("run2.html"), &s, r, N));
    size_t la = 0, lb = 0;
    char *b2 = slurp(tpath("run2.html"), &lb);
    char *a2 = slurp(tpath("run.html"), &la);
    CHECK(a2 && b2 && la == lb && memcmp(a2, b2, la) == 0);
    ef_free(a2);
    ef_free(b2);
    ef_free(html);

    /* Asynchronous mode with staleness, no DP: staleness chart instead. */
    make_run(r, N, RUN_STALE, &s);
    s.config_json = NULL;
    html = report_checked("async.html", &s, r, N, 7);
    if (html) {
        CHECK(strstr(html, "Update staleness") != NULL);
        CHECK(strstr(html, "Configuration") == NULL);
        ef_free(html);
    }

    /* Many rounds: bars are grouped, the file stays well-formed. */
    enum { BIG = 1500 };
    ef_round_record *big = ef_calloc(BIG, sizeof *big);
    CHECK(big != NULL);
    if (big) {
        make_run(big, BIG, 0, &s);
        html = report_checked("big.html", &s, big, BIG, 6);
        if (html) CHECK(strstr(html, "groups of 8 rounds") != NULL);
        ef_free(html);
        ef_free(big);
    }
}

static void test_report_escaping(void) {
    static ef_round_record r[3];
    ef_run_summary s;
    make_run(r, 3, 0, &s);
    s.title = "Run <b>&\"' x";
    s.config_json = "{\"evil\":\"</pre><script>alert(1)</script>\",\"bad\":\"\x01\xff\"}";
    char *html = report_checked("escape.html", &s, r, 3, 6);
    if (!html) return;
    CHECK(strstr(html, "<b>") == NULL);
    CHECK(count_str(html, "Run &lt;b&gt;&amp;&quot;&#39; x") == 2); /* <title> and <h1> */
    CHECK(strstr(html, "&lt;/pre&gt;&lt;script&gt;") != NULL);
    CHECK(strstr(html, "\xff") == NULL && strstr(html, "\x01") == NULL);
    ef_free(html);
}

static void test_report_edges(void) {
    ef_run_summary s;
    static ef_round_record r[20];

    /* 0 rounds: a page that says so, no charts. */
    make_run(r, 0, 0, &s);
    char *html = report_checked("zero.html", &s, NULL, 0, 0);
    if (html) CHECK(strstr(html, "No rounds were recorded") != NULL);
    ef_free(html);

    /* 1 round. */
    make_run(r, 1, RUN_FED, &s);
    html = report_checked("one.html", &s, r, 1, 6);
    ef_free(html);

    /* Nothing measured: every chart of a NaN series says so. */
    for (uint32_t i = 0; i < 5; i++) r[i] = ef_round_record_empty(i + 1);
    memset(&s, 0, sizeof s);
    s.final_accuracy = s.sim_time_s = s.wall_s = s.peak_rss_mb = NAN;
    html = report_checked("nan.html", &s, r, 5, 6);
    if (html) {
        /* accuracy x2, loss, durations */
        CHECK_MSG(count_str(html, ">not measured<") == 4, "%d",
                  count_str(html, ">not measured<"));
        CHECK(strstr(html, "<h1>edgefl run</h1>") != NULL); /* NULL title */
    }
    ef_free(html);

    /* Flat series and huge values keep finite, non-empty axes. */
    for (uint32_t i = 0; i < 20; i++) {
        ef_round_record x = ef_round_record_empty(i + 1);
        x.selected = x.completed = 5;
        x.test_accuracy = 0.5;
        x.test_loss = i % 2 ? 1e300 : -1e300;
        x.train_loss = i % 3 ? INFINITY : DBL_MAX;
        x.sim_start = 10.0 * i;
        x.sim_end = 10.0 * i + 10; /* identical durations */
        x.bytes_up = UINT64_MAX;
        x.bytes_down = 0;
        x.epsilon = 1e-300 * i;
        x.staleness_mean = 0;
        x.staleness_max = 0;
        r[i] = x;
    }
    make_run(r, 0, 0, &s);
    html = report_checked("flat.html", &s, r, 20, 8); /* + epsilon, staleness (0 is measured) */
    if (html) CHECK(strstr(html, "<td>18.4 EB</td>") != NULL);
    ef_free(html);
}

static void test_report_failures(void) {
    static ef_round_record r[10];
    ef_run_summary s;
    make_run(r, 10, 0, &s);

    CHECK(ef_report_write_html(NULL, &s, r, 10) == EF_ERR_INVALID);
    CHECK(ef_report_write_html(tpath("x.html"), NULL, r, 10) == EF_ERR_INVALID);
    CHECK(ef_report_write_html(tpath("x.html"), &s, NULL, 10) == EF_ERR_INVALID);

    /* A missing directory: EF_ERR_IO naming the path, nothing created. */
    const char *p = tpath("no-such-dir/report.html");
    CHECK(ef_report_write_html(p, &s, r, 10) == EF_ERR_IO);
    CHECK_MSG(strstr(ef_last_error(), p) != NULL, "message: %s", ef_last_error());
    struct stat sb;
    CHECK(stat(tpath("no-such-dir"), &sb) != 0);

    /* A failed rewrite leaves the previous report untouched. */
    const char *keep = tpath("keep.html");
    CHECK_OK(ef_write_file_atomic(keep, "old", 3));
    CHECK(chmod(g_dir, 0555) == 0);
    if (access(g_dir, W_OK) != 0) { /* root ignores the mode: skip */
        CHECK(ef_report_write_html(keep, &s, r, 10) == EF_ERR_IO);
        char *t = slurp(keep, NULL);
        CHECK(t && strcmp(t, "old") == 0);
        ef_free(t);
    }
    CHECK(chmod(g_dir, 0755) == 0);
    CHECK(count_entries(".tmp.") == 0);
}

static long g_budget;
static void *oom_malloc(void *u, size_t n) {
    (void)u;
    return g_budget-- > 0 ? malloc(n) : NULL;
}
static void *oom_realloc(void *u, void *p, size_t n) {
    (void)u;
    return g_budget-- > 0 ? realloc(p, n) : NULL;
}
static void oom_free(void *u, void *p) {
    (void)u;
    free(p);
}

/* Every allocation failing in turn gives EF_ERR_NOMEM and no file. */
static void test_report_oom(void) {
    static ef_round_record r[30];
    ef_run_summary s;
    make_run(r, 30, RUN_FED | RUN_DP, &s);
    ef_allocator a = {oom_malloc, oom_realloc, oom_free, NULL};
    const char *p = tpath("oom.html");
    int ok = 0;
    for (long budget = 0; budget < 200 && !ok; budget++) {
        g_budget = budget;
        ef_set_allocator(&a);
        ef_status st = ef_report_write_html(p, &s, r, 30);
        ef_set_allocator(NULL);
        if (st == EF_OK) {
            ok = 1;
        } else {
            CHECK_MSG(st == EF_ERR_NOMEM, "budget %ld: %s", budget, ef_last_error());
            CHECK(access(p, F_OK) != 0);
        }
        CHECK(count_entries(".tmp.") == 0);
    }
    CHECK(ok);
}

/* Under a locale with a decimal comma the outputs still use points. Runs only
 * where such a locale is installed (e.g. LOCPATH with a localedef'd de_DE). */
static void test_locale(void) {
    const char *names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"};
    const char *got = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !got; i++)
        got = setlocale(LC_NUMERIC, names[i]);
    char probe[16];
    snprintf(probe, sizeof probe, "%.1f", 0.5);
    if (!got || strcmp(probe, "0,5") != 0) {
        setlocale(LC_NUMERIC, "C");
        printf("no decimal-comma locale: skipping the locale check\n");
        return;
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ef_round_record r = ef_round_record_empty(1);
    r.test_accuracy = 0.5;
    CHECK_OK(ef_round_record_write_json(f, &r, 0));
    fclose(f);
    CHECK_MSG(buf && strstr(buf, "\"test_accuracy\":0.5,") != NULL, "%s", buf ? buf : "");
    free(buf);
    static ef_round_record rr[12];
    ef_run_summary s;
    make_run(rr, 12, RUN_FED, &s);
    char *html = report_checked("locale.html", &s, rr, 12, 6);
    ef_free(html); /* report_checked looked for decimal commas */
    snprintf(probe, sizeof probe, "%.1f", 0.5);
    CHECK(strcmp(probe, "0,5") == 0); /* the caller's locale is restored */
    setlocale(LC_NUMERIC, "C");
}

/* The example report people look at: a realistic run with every chart. */
static void write_example(void) {
    enum { N = 100 };
    static ef_round_record r[N];
    ef_run_summary s;
    make_run(r, N, RUN_FED | RUN_DP, &s);
    const char *p = EF_BINARY_DIR "/example-report.html";
    CHECK_OK(ef_report_write_html(p, &s, r, N));
    printf("example report: %s\n", p);
}

int main(void) {
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/edgefl-metrics-XXXXXX", tmp);
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    g_python = access("/usr/bin/python3", X_OK) == 0;
    if (g_python) {
        FILE *f = fopen(tpath("check.py"), "w");
        g_python = f && fputs(CHECKER, f) >= 0;
        if (f) fclose(f);
    }
    if (!g_python) printf("python3 not found: skipping the JSON and XML parser checks\n");
    test_json_lines();
    test_report_realistic();
    test_report_escaping();
    test_report_edges();
    test_report_failures();
    test_report_oom();
    test_locale();
    write_example();
    if (getenv("EF_TEST_KEEP")) printf("kept %s\n", g_dir); /* to look at the edge cases */
    else tu_rmtree(g_dir);
    return tu_finish("sim/test_metrics");
}
