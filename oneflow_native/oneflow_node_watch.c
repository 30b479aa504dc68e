/* What a process under OneFlow's launcher needs when another node fails, which Python cannot do inside OneFlow 0.9:
   a deadline for OneFlow's waits on the other nodes (watchdog.py), and the line that names a lost node (multi_node.py).

   Deadlines. While OneFlow waits for the other processes, at `import oneflow` or in a collective, it holds Python's
   GIL, so no Python thread can run to end the wait. A thread of this library waits for the deadline instead, and
   past it writes the line it was given and ends the process (_exit(1)).

   The line for a lost node: which node was lost, and how to resume. multi_node.py sets a line for each node's address.

   When a process dies, the others' TCP connections to it break, and the first OneFlow thread to notice ends its
   process with a glog FATAL (comm_network/epoll/io_event_poller.cpp's EPOLLERR check, or the heartbeat of
   control/ctrl_client.cpp): glog prints OneFlow's message and its stack, then calls abort(). That happens inside
   OneFlow, which no Python code can catch, so this library's SIGABRT handler writes the line: it looks for TCP
   connections whose other end is gone (POLLHUP, POLLRDHUP or POLLERR at once) and writes the line set for each
   such end's IPv4 address, once, other nodes' before this node's own. A connection reset by its peer no longer has
   one (getpeername fails), so the addresses are taken beforehand, from the connections open when the lines are
   set: multi_node.py sets them once the processes have agreed, in a collective that runs over OneFlow's
   connections. An abort with no such connection (some other FATAL) writes nothing. Everything the handler calls is
   async-signal-safe: fstat, poll, strlen, write and nanosleep; it keeps errno, writes the lines once however many
   threads abort (the others wait for them), and then calls the handler that was there before it (Python's
   faulthandler, for one). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define NODES 256
#define LINE 1024
#define FDS 4096 /* descriptors looked at: a process of this job has a few hundred */

static struct {
  in_addr_t address;
  char lines[2][LINE]; /* the handler reads lines[current] while a new line is written to the other */
  atomic_int current;
  int own; /* the address of this process's own node: its line comes after those of other nodes */
} nodes[NODES];
static atomic_int count;
/* The connections to other nodes, taken when a line is set: descriptor, its socket's inode (a descriptor number
   reused since for another file is told apart by it), and index in nodes; the same two-copy way. */
static struct {
  int fd, node;
  ino_t inode;
} peers[2][FDS];
static int peer_count[2];
static atomic_int peers_current;
static struct sigaction previous; /* SIGABRT's action before this library's (Python's faulthandler, say) */
static atomic_int line_state; /* 0: no line written yet, 1: being written by one thread, 2: done */

static void on_abort(int signum, siginfo_t *info, void *context) {
  const int saved_errno = errno;
  int none = 0;
  if (atomic_compare_exchange_strong(&line_state, &none, 1)) {
    /* Every node with a broken connection, once: other nodes first (the one that died is among them; a process
       of this node may have died of its loss second), then this node's own. */
    const int current = atomic_load(&peers_current);
    char broken[NODES] = {0};
    for (int i = 0; i < peer_count[current]; i++) {
      struct pollfd gone = {.fd = peers[current][i].fd, .events = POLLRDHUP};
      struct stat file;
      if (fstat(gone.fd, &file) != 0 || file.st_ino != peers[current][i].inode) continue; /* closed, or reused */
      if (poll(&gone, 1, 0) == 1 && (gone.revents & (POLLHUP | POLLRDHUP | POLLERR)))
        broken[peers[current][i].node] = 1;
    }
    const int known = atomic_load(&count);
    for (int own = 0; own < 2; own++) {
      for (int node = 0; node < known; node++) {
        if (!broken[node] || nodes[node].own != own) continue;
        const char *line = nodes[node].lines[atomic_load(&nodes[node].current)];
        if (write(STDERR_FILENO, line, strlen(line)) < 0) break;
      }
    }
    atomic_store(&line_state, 2);
  } else {
    /* Another thread's abort came first: let it finish its line before this one goes on to end the process. */
    const struct timespec moment = {0, 1000000};
    while (atomic_load(&line_state) == 1) nanosleep(&moment, NULL);
  }
  errno = saved_errno;
  if (previous.sa_flags & SA_SIGINFO) {
    previous.sa_sigaction(signum, info, context);
  } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    previous.sa_handler(signum);
  } /* then abort() ends the process, with SIGABRT's default action */
}

/* Take the other end of each open TCP connection, for on_abort. */
static void take_owners(void) {
  const int next = 1 - atomic_load(&peers_current);
  peer_count[next] = 0;
  for (int fd = 0; fd < FDS; fd++) {
    struct sockaddr_in peer;
    socklen_t size = sizeof peer;
    struct stat file;
    if (getpeername(fd, (struct sockaddr *)&peer, &size) != 0 || peer.sin_family != AF_INET || fstat(fd, &file) != 0)
      continue;
    for (int i = 0; i < atomic_load(&count); i++) {
      if (nodes[i].address == peer.sin_addr.s_addr) {
        peers[next][peer_count[next]].fd = fd;
        peers[next][peer_count[next]].inode = file.st_ino;
        peers[next][peer_count[next]++].node = i;
      }
    }
  }
  atomic_store(&peers_current, next);
}

/* Set the line (ending in a newline) written when a connection to address (dotted IPv4) breaks, replacing the one
   set before, and take the connections open now; own: the address is this process's own node's. The first call
   installs the handler. Returns 0, or -1 for a bad address, too many nodes or too long a line. Called from one
   thread at a time. */
int oneflow_lost_node_line(const char *address, const char *line, int own) {
  struct in_addr parsed;
  if (inet_pton(AF_INET, address, &parsed) != 1 || strlen(line) >= LINE) return -1;
  int i = 0, known = atomic_load(&count);
  while (i < known && nodes[i].address != parsed.s_addr) i++;
  if (i == NODES) return -1;
  int next = i < known ? 1 - atomic_load(&nodes[i].current) : 0;
  strcpy(nodes[i].lines[next], line);
  nodes[i].address = parsed.s_addr;
  nodes[i].own = own != 0;
  atomic_store(&nodes[i].current, next);
  if (i == known) atomic_store(&count, known + 1);
  take_owners();
  if (known == 0) {
    struct sigaction action = {.sa_sigaction = on_abort, .sa_flags = SA_SIGINFO};
    sigemptyset(&action.sa_mask);
    sigaction(SIGABRT, &action, &previous);
  }
  return 0;
}

static pthread_mutex_t deadline_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t deadline_changed;
static pthread_once_t deadline_once = PTHREAD_ONCE_INIT;
static pthread_t deadline_thread;
static int deadline_running, deadline_met;
static struct timespec deadline_at; /* CLOCK_MONOTONIC */
static char deadline_line[LINE];
#define MAX_SECONDS 1e9 /* 31 years */

static void deadline_init(void) {
  pthread_condattr_t attributes;
  pthread_condattr_init(&attributes);
  pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
  pthread_cond_init(&deadline_changed, &attributes);
}

static void *watch_deadline(void *unused) {
  (void)unused;
  pthread_mutex_lock(&deadline_lock);
  while (!deadline_met) {
    const int waited = pthread_cond_timedwait(&deadline_changed, &deadline_lock, &deadline_at);
    if (waited == ETIMEDOUT && !deadline_met) {
      if (write(STDERR_FILENO, deadline_line, strlen(deadline_line)) < 0) _exit(1);
      _exit(1);
    }
    if (waited != 0 && waited != ETIMEDOUT) { /* EINVAL, say: the wait would never end, so neither would this loop */
      static const char error[] = "oneflow_node_watch: the deadline cannot be kept (pthread_cond_timedwait failed)\n";
      if (write(STDERR_FILENO, error, sizeof error - 1) < 0) break;
      break;
    }
  }
  pthread_mutex_unlock(&deadline_lock);
  return NULL;
}

/* Start a deadline: unless oneflow_deadline_end() is called within seconds, write line (ending in a newline) and
   exit 1. One deadline at a time, from one thread. Returns 0, or -1 if one is running already, seconds is not a
   finite number above 0, the line is too long or no thread could be started. */
int oneflow_deadline_start(double seconds, const char *line) {
  pthread_once(&deadline_once, deadline_init);
  if (deadline_running || !(isfinite(seconds) && seconds > 0) || strlen(line) >= LINE) return -1;
  if (seconds > MAX_SECONDS) seconds = MAX_SECONDS; /* a time_t holds it, and no wait is that long */
  clock_gettime(CLOCK_MONOTONIC, &deadline_at);
  const double whole = floor(seconds);
  const long nanoseconds = deadline_at.tv_nsec + (long)((seconds - whole) * 1e9); /* below 2e9: normalised below */
  deadline_at.tv_sec += (time_t)whole + nanoseconds / 1000000000L;
  deadline_at.tv_nsec = nanoseconds % 1000000000L;
  strcpy(deadline_line, line);
  deadline_met = 0;
  if (pthread_create(&deadline_thread, NULL, watch_deadline, NULL) != 0) return -1;
  deadline_running = 1;
  return 0;
}

/* End the running deadline: the wait it bounded is over. */
void oneflow_deadline_end(void) {
  if (!deadline_running) return;
  pthread_mutex_lock(&deadline_lock);
  deadline_met = 1;
  pthread_cond_signal(&deadline_changed);
  pthread_mutex_unlock(&deadline_lock);
  pthread_join(deadline_thread, NULL);
  deadline_running = 0;
}
