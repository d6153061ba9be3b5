/* A hostile guest agent: /init of the VM in place of capsa's agent (CAPSA_AGENT), standing
 * for a guest whose kernel the workload took over. It speaks the agent protocol (4-byte
 * big-endian length, JSON envelope) well enough to be booted, then misbehaves as the
 * workload's first argument says:
 *   flood-events   never answers Create; sends 1 MiB output events without end
 *   flood-console  answers everything; writes CONSOLE_MIB MiB to the serial console
 *                  between two marker lines, then reports the workload's exit (code 0)
 *   error-text     answers Create with an error of 1 MiB of text, newlines and escapes
 *   die            at Create, writes a marker line to the console and stops the VM */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

/* The protocol version this capsa speaks, given by the test as -DPROTOCOL_VERSION="N". */
#ifndef PROTOCOL_VERSION
#error "compile with -DPROTOCOL_VERSION set to the protocol version, quoted"
#endif

#define CONSOLE_MIB 2

static int chan = -1;

static void put(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) _exit(1);
        p += w;
        n -= (size_t)w;
    }
}

static void send_frame(const char *json, size_t n) {
    unsigned char len[4] = {n >> 24, n >> 16, n >> 8, n};
    put(chan, (const char *)len, 4);
    put(chan, json, n);
}

static void send_text(const char *json) { send_frame(json, strlen(json)); }

/* The next frame, NUL-terminated, in a buffer that grows to fit it; its id in *id. */
static char *next_frame(unsigned long long *id) {
    static char *buf;
    unsigned char len[4];
    size_t got = 0;
    while (got < 4) {
        ssize_t r = read(chan, len + got, 4 - got);
        if (r <= 0) _exit(1);
        got += (size_t)r;
    }
    size_t n = (size_t)len[0] << 24 | len[1] << 16 | len[2] << 8 | len[3];
    buf = realloc(buf, n + 1);
    if (!buf) _exit(1);
    for (got = 0; got < n;) {
        ssize_t r = read(chan, buf + got, n - got);
        if (r <= 0) _exit(1);
        got += (size_t)r;
    }
    buf[n] = 0;
    const char *i = strstr(buf, "\"id\":");
    *id = i ? strtoull(i + 5, NULL, 10) : 0;
    return buf;
}

static void answer(unsigned long long id, const char *response) {
    char json[512];
    snprintf(json, sizeof json, "{\"version\":" PROTOCOL_VERSION ",\"id\":%llu,\"message\":{\"response\":%s}}", id,
             response);
    send_text(json);
}

static int open_port(void) {
    char path[300], name[64];
    DIR *d = opendir("/sys/class/virtio-ports");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
        int f = open(path, O_RDONLY);
        if (f < 0) continue;
        ssize_t n = read(f, name, sizeof name - 1);
        close(f);
        if (n > 0 && strncmp(name, "capsa.agent", 11) == 0) {
            snprintf(path, sizeof path, "/dev/%s", e->d_name);
            closedir(d);
            return open(path, O_RDWR);
        }
    }
    if (d) closedir(d);
    return -1;
}

static void flood_events(void) {
    const char *head = "{\"version\":" PROTOCOL_VERSION ",\"id\":0,\"message\":{\"event\":{\"output\":"
                       "{\"process\":\"x\",\"stream\":\"stdout\",\"data\":\"";
    const char *tail = "\"}}}}";
    size_t data = (1 << 20) / 3 * 4; /* base64 of 1 MiB */
    size_t n = strlen(head) + data + strlen(tail);
    char *event = malloc(n);
    if (!event) _exit(1);
    memcpy(event, head, strlen(head));
    memset(event + strlen(head), 'A', data);
    memcpy(event + strlen(head) + data, tail, strlen(tail));
    for (;;) send_frame(event, n);
}

static void flood_console(const char *process) {
    char line[128];
    put(1, "HOSTILE-CONSOLE-START\n", 22);
    for (long i = 0, written = 0; written < (long)CONSOLE_MIB << 20; i++) {
        int n = snprintf(line, sizeof line, "hostile console line %08ld of a guest that never stops\n", i);
        put(1, line, (size_t)n);
        written += n;
    }
    put(1, "HOSTILE-CONSOLE-END\n", 20);
    char json[512];
    snprintf(json, sizeof json,
             "{\"version\":" PROTOCOL_VERSION ",\"id\":0,\"message\":{\"event\":{\"exited\":"
             "{\"process\":\"%s\",\"code\":0,\"oom_killed\":false}}}}",
             process);
    send_text(json);
}

static void error_text(unsigned long long id) {
    size_t n = 1 << 20;
    char *json = malloc(n + 256);
    if (!json) _exit(1);
    int k = sprintf(json, "{\"version\":" PROTOCOL_VERSION ",\"id\":%llu,\"message\":{\"response\":{\"error\":"
                          "{\"kind\":\"internal\",\"message\":\"HOSTILE-ERROR\\n\\u001b[2J",
                    id);
    memset(json + k, 'E', n);
    strcpy(json + k + n, "\"}}}}");
    send_frame(json, strlen(json));
}

int main(void) {
    mkdir("/dev", 0755);
    mkdir("/sys", 0755);
    mount("devtmpfs", "/dev", "devtmpfs", 0, 0);
    mount("sysfs", "/sys", "sysfs", 0, 0);
    while ((chan = open_port()) < 0) usleep(10000);
    char process[80] = "";
    for (;;) {
        unsigned long long id;
        char *frame = next_frame(&id);
        if (strstr(frame, "\"request\":\"hello\"")) {
            answer(id, "{\"hello\":{\"agent\":\"hostile\",\"kernel\":\"hostile\"}}");
        } else if (strstr(frame, "\"request\":{\"create\"")) {
            const char *p = strstr(frame, "\"id\":\"");
            if (p) sscanf(p + 6, "%64[0-9a-f]", process);
            if (strstr(frame, "\"flood-events\"")) flood_events();
            if (strstr(frame, "\"error-text\"")) {
                error_text(id);
                continue;
            }
            if (strstr(frame, "\"die\"")) {
                put(1, "HOSTILE-LAST-WORDS\n", 19);
                reboot(RB_AUTOBOOT);
            }
            answer(id, "\"ok\"");
        } else if (strstr(frame, "\"request\":\"start\"")) {
            answer(id, "\"ok\"");
        } else if (strstr(frame, "\"request\":{\"close_input\"")) {
            answer(id, "\"ok\"");
            flood_console(process);
        } else if (strstr(frame, "\"request\":\"shutdown\"")) {
            answer(id, "\"ok\"");
            sync();
            reboot(RB_AUTOBOOT);
            return 0;
        } else {
            answer(id, "\"ok\"");
        }
    }
}
