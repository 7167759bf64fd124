/*
 * Internals of src/serve shared between its files: the dashboard page, kept
 * as three assets (src/serve/dashboard.html, .css, .js) that the build
 * compiles in as byte arrays (cmake/embed_dashboard.cmake). The HTML holds
 * the markers <!--EF_STYLE--> and <!--EF_SCRIPT-->, where the CSS and the
 * JavaScript go inline; they stay separate until then so the HTTP code can
 * hash them for the page's Content-Security-Policy.
 */
#ifndef EDGEFL_SERVE_INTERNAL_H
#define EDGEFL_SERVE_INTERNAL_H

/* NUL-terminated UTF-8 text of each asset. */
extern const unsigned char ef__dash_html[];
extern const unsigned char ef__dash_css[];
extern const unsigned char ef__dash_js[];

#endif /* EDGEFL_SERVE_INTERNAL_H */
