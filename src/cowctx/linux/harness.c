/* cowctx contention harness: timings the referee's one-CPU scenarios cannot give.
 *
 *   harness wake ROUNDS
 *     Two processes on CPU 0 and CPU 1 (when there are two) pass a byte back and
 *     forth through pipes; prints one-way latencies (ns) of ROUNDS round trips:
 *     the cost of waking a sleeper on another CPU (the simulation's hand-off).
 *
 *   harness pageout PAGES SLEEPERS ITERS FORKER CPU_PAGER CPU_FORKER
 *     The pager maps 2*PAGES anonymous pages, writes them, forks SLEEPERS children
 *     that sleep, unmaps its first half (its VMA now starts PAGES further into the
 *     anon_vma's interval tree than the children's, which come first in a walk) and
 *     writes its second half again (CoW: its folios are its own, in the root
 *     anon_vma; each walk probes every sleeper's page table before finding the
 *     pager's: the shape of commit 5beb49305251), and with FORKER forks a child
 *     that forks and reaps grandchildren in a loop (each fork and exit write-locks
 *     the root anon_vma).  Then ITERS times: write a zero to every page (back from
 *     the zeromap: no I/O), and time MADV_PAGEOUT of all of them.  Pager on CPU
 *     CPU_PAGER, forker on CPU_FORKER.  Prints each MADV_PAGEOUT's ns, then
 *     "forks N ELAPSED_NS".
 */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_COLD
#define MADV_COLD 20
#endif

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0) {
		perror("sched_setaffinity");
		exit(2);
	}
}

static int wake(int rounds)
{
	int ab[2], ba[2];
	char c = 0;
	int other = sysconf(_SC_NPROCESSORS_ONLN) > 1 ? 1 : 0;
	if (pipe(ab) || pipe(ba))
		return 2;
	pid_t pid = fork();
	if (pid == 0) {
		pin(other);
		for (int i = 0; i < rounds + 10; i++) {
			if (read(ab[0], &c, 1) != 1 || write(ba[1], &c, 1) != 1)
				_exit(1);
		}
		_exit(0);
	}
	pin(0);
	for (int i = 0; i < rounds + 10; i++) {
		uint64_t t0 = now_ns();
		if (write(ab[1], &c, 1) != 1 || read(ba[0], &c, 1) != 1)
			return 2;
		uint64_t t1 = now_ns();
		if (i >= 10)
			printf("%llu\n", (unsigned long long)((t1 - t0) / 2));
	}
	waitpid(pid, NULL, 0);
	return 0;
}

/* The pager's address space: 2 * PAGES pages written, SLEEPERS children
 * forked that share them and sleep, then the first half unmapped and the second
 * written with VAL: the pager's own folios, in an anon_vma hierarchy of
 * SLEEPERS + 1 mms.  Returns the second half, or NULL. */
static char *pager_setup(long pages, int sleepers, char val, pid_t **kids)
{
	long psz = sysconf(_SC_PAGESIZE);
	size_t len = (size_t)pages * psz;
	char *buf = mmap(NULL, 2 * len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return NULL;
	*kids = calloc(sleepers + 1, sizeof(pid_t));
	for (long i = 0; i < 2 * pages; i++)
		buf[i * psz] = 1;
	for (int k = 0; k < sleepers; k++) {
		(*kids)[k] = fork();
		if ((*kids)[k] == 0) {
			for (;;)
				pause();
		}
	}
	if (munmap(buf, len) != 0)
		return NULL;
	buf += len;
	for (long i = 0; i < pages; i++)
		buf[i * psz] = val;
	return buf;
}

static void reap_sleepers(pid_t *kids, int sleepers)
{
	for (int k = 0; k < sleepers; k++) {
		kill(kids[k], SIGKILL);
		waitpid(kids[k], NULL, 0);
	}
}

static int pageout(long pages, int sleepers, int iters, int forker, int cpu_pager, int cpu_forker)
{
	long psz = sysconf(_SC_PAGESIZE);
	size_t len = (size_t)pages * psz;
	volatile int *stop = mmap(NULL, psz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (stop == MAP_FAILED)
		return 2;
	pid_t *kids;
	pin(cpu_pager);
	char *buf = pager_setup(pages, sleepers, 0, &kids);
	if (buf == NULL)
		return 2;
	pid_t fk = -1;
	uint64_t t_start = now_ns();
	if (forker) {
		fk = fork();
		if (fk == 0) {
			pin(cpu_forker);
			long n = 0;
			while (!*stop) {
				pid_t g = fork();
				if (g == 0)
					_exit(0);
				if (g > 0)
					waitpid(g, NULL, 0);
				n++;
			}
			stop[1] = (int)n;
			_exit(0);
		}
		usleep(20000);
	}
	uint64_t *lat = calloc(iters, sizeof(uint64_t));
	t_start = now_ns();
	for (int it = 0; it < iters; it++) {
		for (long i = 0; i < pages; i++)
			buf[i * psz] = 0;
		uint64_t t0 = now_ns();
		if (madvise(buf, len, MADV_PAGEOUT) != 0) {
			perror("madvise");
			return 2;
		}
		lat[it] = now_ns() - t0;
	}
	uint64_t elapsed = now_ns() - t_start;
	*stop = 1;
	if (fk > 0)
		waitpid(fk, NULL, 0);
	reap_sleepers(kids, sleepers);
	for (int it = 0; it < iters; it++)
		printf("%llu\n", (unsigned long long)lat[it]);
	printf("forks %d %llu\n", forker ? stop[1] : 0, (unsigned long long)elapsed);
	return 0;
}

/* harness reclaim PAGES SLEEPERS MS FORKER CPU_PUSHER CPU_FORKER CGROUP_PROCS FILE
 *   The pager joins the memory cgroup whose cgroup.procs is CGROUP_PROCS, builds
 *   its folios as pageout does (each walk probes the sleepers' page tables first)
 *   and then sleeps: its folios are idle (not referenced).  A pusher, on CPU
 *   CPU_PUSHER, reads FILE round and round: its page cache charges the cgroup past
 *   its limit, and its direct reclaim scans the pager's idle folios:
 *   folio_referenced() with try_lock, which keeps a folio (FOLIOREF_KEEP) only
 *   when the try-lock fails.  With FORKER 1 a forker on CPU_FORKER forks and reaps
 *   children in the pager's anon_vma hierarchy; with FORKER 2 the same forker is
 *   forked before the pager maps its pages (its forks and exits never lock their
 *   anon_vma).  For MS milliseconds.  Prints
 *   "reads N ELAPSED_NS forks M". */
static pid_t start_forker(volatile long *stop, int cpu)
{
	pid_t fk = fork();
	if (fk == 0) {
		pin(cpu);
		long n = 0;
		while (!stop[3]) /* the pager's set-up is done */
			usleep(1000);
		while (!stop[0]) {
			pid_t g = fork();
			if (g == 0)
				_exit(0);
			if (g > 0)
				waitpid(g, NULL, 0);
			n++;
		}
		stop[1] = n;
		_exit(0);
	}
	return fk;
}

static int reclaim(long pages, int sleepers, int ms, int forker, int cpu_pusher, int cpu_forker,
		   const char *procs, const char *file)
{
	FILE *f = fopen(procs, "w");
	if (!f || fprintf(f, "0\n") < 0 || fclose(f) != 0) {
		perror(procs);
		return 2;
	}
	long psz = sysconf(_SC_PAGESIZE);
	size_t len = (size_t)pages * psz;
	volatile long *stop = mmap(NULL, psz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (stop == MAP_FAILED)
		return 2;
	pid_t *kids;
	pid_t fk = -1, pu = -1;
	if (forker == 2) /* forked before the pager's mapping: outside its anon_vma hierarchy */
		fk = start_forker(stop, cpu_forker);
	char *buf = pager_setup(pages, sleepers, 2, &kids);
	if (buf == NULL)
		return 2;
	/* idle for real: the set-up's writes left the pager's PTEs young, and a
	 * folio with one young PTE is kept once (folio_check_references():
	 * FOLIOREF_KEEP, counted in nr_ref_keep like a failed try-lock);
	 * MADV_COLD clears the young bits and PG_referenced */
	if (madvise(buf, len, MADV_COLD) != 0) {
		perror("madvise(MADV_COLD)");
		return 2;
	}
	stop[3] = 1;
	if (forker == 1)
		fk = start_forker(stop, cpu_forker);
	pu = fork();
	if (pu == 0) {
		pin(cpu_pusher);
		munmap(buf, len); /* the pusher maps none of the pager's folios */
		char chunk[65536];
		long n = 0;
		FILE *in = fopen(file, "r");
		if (!in)
			_exit(2);
		while (!stop[0]) {
			if (fread(chunk, 1, sizeof(chunk), in) == 0)
				rewind(in);
			n++;
		}
		stop[2] = n;
		_exit(0);
	}
	uint64_t t0 = now_ns();
	usleep((useconds_t)ms * 1000);
	uint64_t elapsed = now_ns() - t0;
	stop[0] = 1;
	waitpid(pu, NULL, 0);
	if (fk > 0)
		waitpid(fk, NULL, 0);
	reap_sleepers(kids, sleepers);
	printf("reads %ld %llu forks %ld\n", stop[2], (unsigned long long)elapsed, stop[1]);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 10 && !strcmp(argv[1], "reclaim"))
		return reclaim(atol(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]),
			       atoi(argv[6]), atoi(argv[7]), argv[8], argv[9]);
	if (argc == 3 && !strcmp(argv[1], "wake"))
		return wake(atoi(argv[2]));
	if (argc == 8 && !strcmp(argv[1], "pageout"))
		return pageout(atol(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]),
			       atoi(argv[6]), atoi(argv[7]));
	fprintf(stderr, "usage: harness wake ROUNDS | harness pageout PAGES SLEEPERS ITERS FORKER CPU_PAGER CPU_FORKER\n");
	return 2;
}
