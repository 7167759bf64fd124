/*
 * Broker options shared by `edgefl server` and `edgefl client`: the URL,
 * TLS files, credentials and connection tuning, turned into an
 * ef_mqtt_config. The password is read from a file (never from the command
 * line, where other users could see it) and wiped after use.
 */
#ifndef EDGEFL_CLI_MQTT_ARGS_H
#define EDGEFL_CLI_MQTT_ARGS_H

#include "cli.h"
#include "edgefl/transport.h"

typedef struct mqtt_args {
    const char *broker, *tls_ca, *tls_cert, *tls_key, *username, *password_file;
    int keepalive, max_packet_kib, session_expiry, verbose;
    char *password; /* read from password_file by mqtt_args_config */
} mqtt_args;

#define MQTT_ARGS_N 10

/* Defaults (keepalive 30 s, 256 KiB packets, sessions kept 600 s). */
void mqtt_args_defaults(mqtt_args *a);

/* Writes the MQTT_ARGS_N option entries into out. */
void mqtt_args_options(mqtt_args *a, cli_opt *out);

/*
 * Fills *c (client id and will left to the caller) and sets the log level
 * (info; debug with --verbose; warnings only with `quiet`). Returns 0 or an
 * exit code after printing the reason.
 */
int mqtt_args_config(const char *cmd, mqtt_args *a, int quiet, ef_mqtt_config *c);

/* Wipes and frees the password. */
void mqtt_args_free(mqtt_args *a);

/* SIGINT and SIGTERM set *flag (no SA_RESTART, so waits end early). */
void cli_catch_stop_signals(volatile sig_atomic_t *flag);

#endif /* EDGEFL_CLI_MQTT_ARGS_H */
