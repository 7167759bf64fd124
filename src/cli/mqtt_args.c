/*
 * Broker options of the server and client commands (see mqtt_args.h).
 */
#include <signal.h>
#include <sodium.h>
#include <string.h>

#include "mqtt_args.h"

void mqtt_args_defaults(mqtt_args *a) {
    memset(a, 0, sizeof *a);
    a->keepalive = 30;
    a->max_packet_kib = (int)(EF_MQTT_DEFAULT_MAX_PACKET / 1024);
    a->session_expiry = 600;
}

void mqtt_args_options(mqtt_args *a, cli_opt *out) {
    const cli_opt o[MQTT_ARGS_N] = {
        {"broker", CLI_STR, &a->broker, "URL", "broker: mqtt://HOST:PORT or mqtts://HOST:PORT (TLS)", 0, 0, NULL, 0},
        {"tls-ca", CLI_STR, &a->tls_ca, "FILE", "mqtts: CA certificate (PEM) the broker's certificate must chain to (default: the system's CAs)", 0, 0, NULL, 0},
        {"tls-cert", CLI_STR, &a->tls_cert, "FILE", "mqtts: client certificate (PEM), with --tls-key", 0, 0, NULL, 0},
        {"tls-key", CLI_STR, &a->tls_key, "FILE", "mqtts: client private key (PEM)", 0, 0, NULL, 0},
        {"username", CLI_STR, &a->username, "NAME", "broker user name", 0, 0, NULL, 0},
        {"password-file", CLI_STR, &a->password_file, "FILE", "file holding the broker password (first line)", 0, 0, NULL, 0},
        {"keepalive", CLI_INT, &a->keepalive, "S", "MQTT keepalive in seconds (default 30)", 5, 65535, NULL, 0},
        {"max-packet", CLI_INT, &a->max_packet_kib, "KIB", "largest MQTT packet sent; bigger messages travel in chunks (default 256; the broker's limit applies if lower)", 1, 262143, NULL, 0},
        {"session-expiry", CLI_INT, &a->session_expiry, "S", "seconds the broker keeps the session (and queued messages) of a disconnected peer (default 600)", 1, 1 << 30, NULL, 0},
        {"verbose", CLI_FLAG, &a->verbose, NULL, "debug logging of the transport", 0, 0, NULL, 0},
    };
    memcpy(out, o, sizeof o);
}

int mqtt_args_config(const char *cmd, mqtt_args *a, int quiet, ef_mqtt_config *c) {
    ef_log_set(NULL, NULL, a->verbose ? EF_LOG_DEBUG : quiet ? EF_LOG_WARN : EF_LOG_INFO);
    if (!a->broker) {
        cli_error(cmd, "--broker mqtt://HOST:PORT is required");
        return CLI_EXIT_USAGE;
    }
    *c = ef_mqtt_defaults();
    c->url = a->broker;
    c->tls_ca = a->tls_ca;
    c->tls_cert = a->tls_cert;
    c->tls_key = a->tls_key;
    c->username = a->username;
    c->keepalive_s = a->keepalive;
    c->max_packet = (size_t)a->max_packet_kib * 1024;
    c->session_expiry_s = (uint32_t)a->session_expiry;
    const char *files[3] = {a->tls_ca, a->tls_cert, a->tls_key};
    for (int i = 0; i < 3; i++) {
        FILE *f = files[i] ? fopen(files[i], "r") : NULL;
        if (files[i] && !f) {
            cli_error(cmd, "cannot read %s", files[i]);
            return CLI_EXIT_USAGE;
        }
        if (f) fclose(f);
    }
    if (a->password_file) {
        if (!a->username) {
            cli_error(cmd, "--password-file needs --username");
            return CLI_EXIT_USAGE;
        }
        char *text = NULL;
        size_t len = 0;
        if (ef_read_file(a->password_file, 4096, &text, &len) != EF_OK) {
            cli_error(cmd, "%s", ef_last_error());
            return CLI_EXIT_USAGE;
        }
        size_t n = strcspn(text, "\r\n");
        if (n == 0) {
            sodium_memzero(text, len);
            ef_free(text);
            cli_error(cmd, "%s: the first line must hold the password", a->password_file);
            return CLI_EXIT_USAGE;
        }
        text[n] = '\0';
        a->password = text;
        c->password = text;
    }
    return 0;
}

void mqtt_args_free(mqtt_args *a) {
    if (a->password) {
        sodium_memzero(a->password, strlen(a->password));
        ef_free(a->password);
        a->password = NULL;
    }
}

static volatile sig_atomic_t *g_stop;

static void on_signal(int sig) {
    (void)sig;
    if (g_stop) *g_stop = 1;
}

void cli_catch_stop_signals(volatile sig_atomic_t *flag) {
    g_stop = flag;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}
