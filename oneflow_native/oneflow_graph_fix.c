/* A fix for a race in OneFlow 0.9.0's nn.Graph runtime, loaded before `import oneflow` (oneflow_setup.py).

   Each run of an nn.Graph is an instruction of OneFlow's VM, LaunchLazyJob, whose Compute() (on a VM worker thread)
   hands the run to the graph's actors and then records it in its stream's queue of graphs in flight:

       buffer_mgr->Get(GetCallbackNotifierBufferName(job_name))->Push(job_instance);
       buffer_mgr->Get(GetSourceTickBufferName(job_name))->Push(job_instance);    // the actors may start now
       lazy_job_stream_policy->EnqueueNNGraph(nn_graph_);                         // queue_.emplace(nn_graph)

   When the run ends, an actor thread calls DequeueNNGraph() (queue_.pop()). A run shorter than the time the worker
   thread is kept off its core between the Push and EnqueueNNGraph (a batch of 1 takes about 2 ms, a time slice is
   a few) ends first: pop() on an empty std::queue, undefined behaviour that corrupts the queue and the heap. The
   process dies later in some other thread (SIGSEGV, malloc's "corrupted" abort), or a second graph waits for ever
   for a queue that is never empty again (WaitUntilQueueEmptyIfFrontNNGraphNotEquals).

   This library defines both methods itself, so that the dynamic linker binds liboneflow's calls to them (liboneflow
   calls them through its PLT, and a library loaded with RTLD_GLOBAL before it comes first), and keeps the queue
   right: a DequeueNNGraph that finds no run recorded is remembered, and the EnqueueNNGraph it overtook is then
   dropped instead of recorded. Every other call goes to OneFlow's own method, in order, under one lock. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ENQUEUE "_ZN7oneflow2vm19LazyJobStreamPolicy14EnqueueNNGraphERKSt10shared_ptrINS_9NNGraphIfEE"
#define DEQUEUE "_ZN7oneflow2vm19LazyJobStreamPolicy14DequeueNNGraphEv"
#define POLICIES 16 /* lazy-job streams a process may have: one per device in practice */

static void (*oneflow_enqueue)(void *policy, const void *graph);
static void (*oneflow_dequeue)(void *policy);
static pthread_once_t resolved = PTHREAD_ONCE_INIT;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  void *policy;
  long recorded; /* runs in OneFlow's queue now */
  long overtaken; /* runs that ended before they were recorded, whose EnqueueNNGraph is still to come */
} streams[POLICIES];
static long enqueued, dequeued, ended_first; /* counts since the start, for tests and the benchmark */
/* For tests only, read once: LENET_GRAPH_FIX_DELAY_US=N holds every EnqueueNNGraph N microseconds before it
   records its run, so that each short run ends first (the race, every time); LENET_GRAPH_FIX_OFF=1 then passes
   both calls straight to OneFlow's methods, as without the fix, to see what the race does. */
static long delay_us;
static int off;

static int find_liboneflow(struct dl_phdr_info *info, size_t size, void *path) {
  if (strstr(info->dlpi_name, "/liboneflow") == NULL) return 0;
  *(const char **)path = info->dlpi_name;
  return 1;
}

/* OneFlow's own methods, from liboneflow (not in the global scope: its handle is searched directly). A OneFlow
   whose methods have other names never calls this library's either: oneflow_graph_fix_check says so. */
static void resolve(void) {
  const char *path = NULL;
  dl_iterate_phdr(find_liboneflow, &path);
  void *liboneflow = path ? dlopen(path, RTLD_NOLOAD | RTLD_LAZY) : NULL;
  if (liboneflow) {
    oneflow_enqueue = (void (*)(void *, const void *))dlsym(liboneflow, ENQUEUE);
    oneflow_dequeue = (void (*)(void *))dlsym(liboneflow, DEQUEUE);
  }
  const char *delay = getenv("LENET_GRAPH_FIX_DELAY_US"), *fix_off = getenv("LENET_GRAPH_FIX_OFF");
  delay_us = delay ? atol(delay) : 0;
  off = fix_off && strcmp(fix_off, "1") == 0;
}

static void resolve_or_abort(void) {
  pthread_once(&resolved, resolve);
  if (!oneflow_enqueue || !oneflow_dequeue) {
    fprintf(stderr, "oneflow_graph_fix: LazyJobStreamPolicy's methods not found in liboneflow; "
                    "it is made for oneflow 0.9.0\n");
    abort();
  }
}

/* 1 where liboneflow is loaded and has both methods under 0.9.0's names (so that its calls come here), else 0. */
int oneflow_graph_fix_check(void) {
  pthread_once(&resolved, resolve);
  return oneflow_enqueue && oneflow_dequeue;
}

/* Holds the lock until the enclosing block ends, however it ends: a C++ exception thrown in OneFlow's method (a
   bad_alloc in its queue's emplace) unwinds through this file's frames, compiled with -fexceptions, and unlocks on
   the way, so later runs do not wait for ever on a lock no one holds. The run it was recording stays unrecorded. */
static void unlock(pthread_mutex_t **held) { pthread_mutex_unlock(*held); }
#define HOLD_LOCK pthread_mutex_t *held __attribute__((cleanup(unlock))) = (pthread_mutex_lock(&lock), &lock)

static int stream_of(void *policy) {
  for (int i = 0; i < POLICIES; i++) {
    if (streams[i].policy == policy || streams[i].policy == NULL) {
      streams[i].policy = policy;
      return i;
    }
  }
  fprintf(stderr, "oneflow_graph_fix: more than %d lazy-job streams\n", POLICIES);
  abort();
}

/* oneflow::vm::LazyJobStreamPolicy::EnqueueNNGraph(const std::shared_ptr<NNGraphIf>&) */
void _ZN7oneflow2vm19LazyJobStreamPolicy14EnqueueNNGraphERKSt10shared_ptrINS_9NNGraphIfEE(void *policy,
                                                                                          const void *graph) {
  resolve_or_abort();
  if (delay_us > 0) usleep((useconds_t)delay_us);
  HOLD_LOCK;
  int i = stream_of(policy);
  enqueued++;
  if (off) {
    oneflow_enqueue(policy, graph);
  } else if (streams[i].overtaken > 0) {
    streams[i].overtaken--; /* this run has ended already: recording it would leave it in the queue for ever */
  } else {
    oneflow_enqueue(policy, graph);
    streams[i].recorded++;
  }
}

/* oneflow::vm::LazyJobStreamPolicy::DequeueNNGraph() */
void _ZN7oneflow2vm19LazyJobStreamPolicy14DequeueNNGraphEv(void *policy) {
  resolve_or_abort();
  HOLD_LOCK;
  int i = stream_of(policy);
  dequeued++;
  if (off) {
    oneflow_dequeue(policy);
  } else if (streams[i].recorded == 0) {
    streams[i].overtaken++; /* ended before its EnqueueNNGraph: OneFlow's pop() would find an empty queue */
    ended_first++;
  } else {
    oneflow_dequeue(policy);
    streams[i].recorded--;
  }
}

/* The counts since the process started: runs recorded, runs ended, and runs that ended before they were recorded. */
void oneflow_graph_fix_counts(long *runs_enqueued, long *runs_dequeued, long *runs_ended_first) {
  pthread_mutex_lock(&lock);
  *runs_enqueued = enqueued;
  *runs_dequeued = dequeued;
  *runs_ended_first = ended_first;
  pthread_mutex_unlock(&lock);
}
