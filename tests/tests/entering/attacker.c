/* The attacker of tests/tests/entering.rs, run as root inside a container (static: the test
 * image has no C library).
 *
 *   attacker watch CAPSA_DEV CAPSA_INO ARGV_MARKER ENV_MARKER PTRACE(0|1)
 *     Scans /proc without pause for new processes (every `capsa exec` puts one there) and,
 *     for each, until it runs the image's busybox: reads its cmdline and environ for the
 *     markers, stats its exe against the host's capsa binary (device, inode), and with
 *     PTRACE=1 tries PTRACE_SEIZE (an attach before the process's own execve is a seccomp
 *     bypass). Once it runs busybox it creates /tmp/seen/PID (the exec'd shell waits for
 *     it). When /tmp/stop exists it prints one summary line and exits.
 *
 *   attacker pid1 CAPSA_DEV CAPSA_INO ARGV_MARKER ENV_MARKER
 *     Prints what /proc/1 gives away: its command line, environment, exe.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PID 4194304

static unsigned long long capsa_dev, capsa_ino;
static const char *argv_marker, *env_marker;
static dev_t busybox_dev;
static ino_t busybox_ino;

/* Reads /proc/PID/NAME; returns its length (NULs kept), -1 if it cannot be read. */
static ssize_t slurp(int pid, const char *name, char *buf, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", pid, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t total = 0, n;
    while (total < (ssize_t)size && (n = read(fd, buf + total, size - total)) > 0)
        total += n;
    close(fd);
    return n < 0 && total == 0 ? -1 : total;
}

static int contains(const char *buf, ssize_t len, const char *needle) {
    return len > 0 && memmem(buf, len, needle, strlen(needle)) != NULL;
}

enum exe_kind { EXE_UNKNOWN, EXE_HOST_CAPSA, EXE_BUSYBOX, EXE_OTHER };

static enum exe_kind exe_of(int pid) {
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    if (stat(path, &st) != 0)
        return EXE_UNKNOWN;
    if ((unsigned long long)st.st_dev == capsa_dev && (unsigned long long)st.st_ino == capsa_ino)
        return EXE_HOST_CAPSA;
    if (st.st_dev == busybox_dev && st.st_ino == busybox_ino)
        return EXE_BUSYBOX;
    return EXE_OTHER;
}

/* Attaches to PID; 1 if that worked while PID did not run busybox yet. Detaches again. */
static int seized_before_exec(int pid) {
    if (ptrace(PTRACE_SEIZE, pid, 0, 0) != 0)
        return 0;
    /* Early means it still ran something other than the image's busybox (capsa, or
     * capsa-init's memfd). A process that is already gone (its exe cannot be read) tells
     * nothing either way: counting it would make a command that exits fast look seized. */
    enum exe_kind exe = exe_of(pid);
    int early = exe == EXE_HOST_CAPSA || exe == EXE_OTHER;
    if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) == 0) {
        int status;
        if (waitpid(pid, &status, __WALL) == pid && !WIFEXITED(status) && !WIFSIGNALED(status))
            ptrace(PTRACE_DETACH, pid, 0, 0);
    }
    return early;
}

static int watch(int try_ptrace) {
    static char done[MAX_PID], leaked_argv[MAX_PID], leaked_env[MAX_PID], leaked_exe[MAX_PID];
    static char buf[1 << 16];
    long examined = 0, workloads = 0, attached = 0, argv_leaks = 0, env_leaks = 0, exe_leaks = 0;
    int self = getpid();
    mkdir("/tmp/seen", 0755);
    for (;;) {
        if (access("/tmp/stop", F_OK) == 0)
            break;
        DIR *proc = opendir("/proc");
        if (!proc)
            return 2;
        struct dirent *e;
        while ((e = readdir(proc))) {
            int pid = atoi(e->d_name);
            if (pid <= 0 || pid >= MAX_PID || pid == self || done[pid])
                continue;
            examined++;
            ssize_t n = slurp(pid, "cmdline", buf, sizeof buf);
            if (contains(buf, n, argv_marker) && !leaked_argv[pid]) {
                leaked_argv[pid] = 1;
                argv_leaks++;
            }
            n = slurp(pid, "environ", buf, sizeof buf);
            if (contains(buf, n, env_marker) && !leaked_env[pid]) {
                leaked_env[pid] = 1;
                env_leaks++;
            }
            enum exe_kind exe = exe_of(pid);
            if (exe == EXE_HOST_CAPSA && !leaked_exe[pid]) {
                leaked_exe[pid] = 1;
                exe_leaks++;
            }
            if (exe != EXE_BUSYBOX && try_ptrace && seized_before_exec(pid))
                attached++;
            if (exe == EXE_BUSYBOX) {
                done[pid] = 1;
                workloads++;
                char seen[64];
                snprintf(seen, sizeof seen, "/tmp/seen/%d", pid);
                close(open(seen, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
            }
        }
        closedir(proc);
    }
    printf("summary examined=%ld workloads=%ld attached=%ld cmdline=%ld environ=%ld exe=%ld\n",
           examined, workloads, attached, argv_leaks, env_leaks, exe_leaks);
    return 0;
}

static int pid1(void) {
    static char buf[1 << 16];
    ssize_t n = slurp(1, "cmdline", buf, sizeof buf);
    printf("cmdline_leak=%d\n", contains(buf, n, argv_marker));
    printf("cmdline=");
    for (ssize_t i = 0; i < n; i++)
        putchar(buf[i] ? buf[i] : ' ');
    printf("\n");
    n = slurp(1, "environ", buf, sizeof buf);
    printf("environ_readable=%d\n", n >= 0);
    printf("environ_leak=%d\n", contains(buf, n, env_marker));
    n = slurp(1, "comm", buf, sizeof buf - 1);
    buf[n > 0 ? n - 1 : 0] = 0;
    printf("comm=%s\n", buf);
    printf("exe_host=%d\n", exe_of(1) == EXE_HOST_CAPSA);
    int w = open("/proc/1/exe", O_WRONLY | O_CLOEXEC);
    printf("exe_writable=%d\n", w >= 0);
    /* CVE-2019-5736: a descriptor kept now, reopened for writing through /proc/self/fd. */
    int p = open("/proc/1/exe", O_PATH | O_CLOEXEC);
    char again[64];
    snprintf(again, sizeof again, "/proc/self/fd/%d", p);
    w = p >= 0 ? open(again, O_WRONLY | O_CLOEXEC) : -1;
    printf("exe_reopened_writable=%d\n", w >= 0);
    int r = open("/proc/1/exe", O_RDONLY | O_CLOEXEC);
    int seals = r >= 0 ? fcntl(r, F_GET_SEALS) : -1;
    int all = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
    printf("exe_sealed=%d\n", seals >= 0 && (seals & all) == all);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 6)
        return 2;
    capsa_dev = strtoull(argv[2], NULL, 10);
    capsa_ino = strtoull(argv[3], NULL, 10);
    argv_marker = argv[4];
    env_marker = argv[5];
    struct stat st;
    if (stat("/bin/busybox", &st) != 0)
        return 2;
    busybox_dev = st.st_dev;
    busybox_ino = st.st_ino;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(argv[1], "watch") == 0 && argc == 7)
        return watch(atoi(argv[6]));
    if (strcmp(argv[1], "pid1") == 0)
        return pid1();
    return 2;
}
