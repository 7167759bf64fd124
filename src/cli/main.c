/*
 * edgefl command-line program: dispatches `edgefl <command>` to the
 * commands in this folder. Only the CLI may exit the process.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const cli_cmd COMMANDS[] = {
    {"train", "train a model on this machine and report test accuracy", cmd_train},
    {"eval", "evaluate a saved model on a test set", cmd_eval},
    {"simulate", "simulate federated learning with virtual clients", cmd_simulate},
    {"privacy", "epsilon spent by DP noise and sampling (RDP accountant)", cmd_privacy},
    {"server", "run a federated job's server over an MQTT broker", cmd_server},
    {"client", "run a federated client over an MQTT broker", cmd_client},
    {"aggregator", "run an edge gateway: aggregate local clients, one client upstream", cmd_aggregator},
    {"keygen", "generate an Ed25519 key pair for a server or client", cmd_keygen},
    {"loadgen", "run many light clients over MQTT to load-test a broker and server", cmd_loadgen},
    {"worker", "run a scale-out aggregator worker that shares a server's inbox over MQTT", cmd_worker},
    {"quantize", "quantize a GGUF model to Q8_0 or Q4_0 (ggml block layouts)", cmd_quantize},
    {"gguf-info", "print a GGUF file's metadata and tensor table", cmd_gguf_info},
    {"tokenizer", "train a byte-level BPE tokenizer; encode, decode, measure text", cmd_tokenizer},
    {"corpus", "text corpora for language models: the KJV split by verse, any text file", cmd_corpus},
    {"lm", "train a small llama-style language model; evaluate bits per byte", cmd_lm},
    {"generate", "generate text with a GGUF language model (quantized local inference)", cmd_generate},
    {"perplexity", "perplexity and bits per byte of a GGUF language model on a text file", cmd_perplexity},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void usage(FILE *f) {
    fprintf(f, "Usage: edgefl <command> [options]\n\n"
               "edgefl %s: federated learning and small language models for edge devices.\n\n"
               "Commands:\n",
            ef_version());
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "\nOptions:\n  -h, --help     show this help\n  --version      print the version\n"
               "\n'edgefl <command> --help' describes a command's options.\n");
}

/*
 * The language-model commands run their own threads. OpenBLAS (linked for
 * the training GEMMs, which call it single-threaded) starts a thread pool
 * when it is loaded, before main, and its idle threads spin for about 0.1 s
 * in sched_yield loops, competing with the inference threads for the cores
 * through most of a short generation. OpenBLAS reads OPENBLAS_NUM_THREADS
 * only at load time, so these commands run themselves once more with it set
 * (same process id, arguments and descriptors); if that fails they go on.
 */
static void quiet_blas_threads(char **argv) {
    if (getenv("OPENBLAS_NUM_THREADS")) return;
    if (setenv("OPENBLAS_NUM_THREADS", "1", 1) != 0) return;
    execv("/proc/self/exe", argv);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *c = argv[1];
    if (strcmp(c, "generate") == 0 || strcmp(c, "perplexity") == 0) quiet_blas_threads(argv);
    if (strcmp(c, "-h") == 0 || strcmp(c, "--help") == 0 || strcmp(c, "help") == 0) {
        if (strcmp(c, "help") == 0 && argc > 2) {
            for (size_t i = 0; i < N_COMMANDS; i++)
                if (strcmp(argv[2], COMMANDS[i].name) == 0) {
                    char *av[] = {argv[0], argv[2], "--help", NULL};
                    return COMMANDS[i].run(3, av);
                }
            fprintf(stderr, "edgefl: unknown command '%s'\n", argv[2]);
            return CLI_EXIT_USAGE;
        }
        usage(stdout);
        return 0;
    }
    if (strcmp(c, "--version") == 0 || strcmp(c, "version") == 0) {
        printf("edgefl %s\n", ef_version());
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(c, COMMANDS[i].name) == 0) return COMMANDS[i].run(argc, argv);
    fprintf(stderr, "edgefl: unknown command '%s'\nTry 'edgefl --help'.\n", c);
    return CLI_EXIT_USAGE;
}
