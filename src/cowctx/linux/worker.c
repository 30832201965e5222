/*
 * cowctx scenario worker: one scenario process, driven by the Python controller.
 *
 * Why so bare: every private anonymous VMA the worker owns would get an anon_vma and be
 * cloned by every fork, drowning the scenario's own objects in noise.  So there is no libc,
 * no writable ELF segment, no TLS, no brk; the stack and the signal frames live on a
 * MAP_SHARED anonymous region (shmem: never an anon_vma), and the exec-time [stack] is
 * unmapped before the worker says it is ready.  A null scenario (fork, fork, exit) then
 * causes no anon_vma or anon_vma_chain event at all.
 *
 * Protocol: fd 3 is a SOCK_SEQPACKET unix socket.  The controller sends one struct cmd per
 * step and the worker answers with one struct reply.  A fork command carries the child's
 * socket as SCM_RIGHTS; the child dup2()s it to fd 3.  exec re-executes /proc/self/exe with
 * fd 3 (and the scenario's memfds) kept open; the new image sends the step's reply once it
 * is ready.  EOF on fd 3 makes the worker exit, so a dead controller leaves no worker behind.
 *
 * Build: gcc -O2 -static -nostdlib -ffreestanding -fno-pie -no-pie ... (see build.py).
 */

typedef unsigned long u64;
typedef long i64;
typedef unsigned int u32;
typedef int i32;

#define CTL_FD 3

#define SYS_read 0
#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_mmap 9
#define SYS_munmap 11
#define SYS_rt_sigaction 13
#define SYS_rt_sigreturn 15
#define SYS_sendmsg 46
#define SYS_recvmsg 47
#define SYS_clone 56
#define SYS_execve 59
#define SYS_exit 60
#define SYS_dup2 33
#define SYS_prctl 157
#define SYS_clock_gettime 228
#define SYS_exit_group 231

#define PROT_READ 1
#define PROT_WRITE 2
#define MAP_SHARED 1
#define MAP_ANONYMOUS 0x20
#define SIGCHLD 17
#define SIGBUS 7
#define SIGSEGV 11
#define SA_SIGINFO 4
#define SA_RESTORER 0x04000000
#define PR_SET_NAME 15
#define CLOCK_MONOTONIC 1
#define EINTR 4
#define EBADF 9
#define EINVAL 22
#define MSG_CMSG_CLOEXEC 0x40000000
#define SOL_SOCKET 1
#define SCM_RIGHTS 1

/* Per-process region: header (name, parent region) at the bottom, stack growing down from
 * the top.  Signal frames (xsave with AVX-512 is a few KiB) land on this stack too. */
#define REGION_SIZE (128UL * 1024)

enum op {
	OP_READY = 0,   /* reply only: the image is up (first start or after exec) */
	OP_SYSCALL = 1, /* nr, a[0..5]: reply ret = raw return (-errno on error) */
	OP_TOUCH = 2,   /* a0 addr, a1 pages, a2 mode (0 read, 1 fill a3, 2 stamp a4 + fill) */
	OP_FORK = 3,    /* SCM_RIGHTS: child's socket; name: child's comm */
	OP_EXIT = 4,
	OP_EXEC = 5,    /* name: comm after exec */
};

struct cmd {
	u32 op;
	u32 step;
	u64 nr;
	u64 a[6];
	char name[16];
	u64 pad[4];
}; /* 112 bytes: struct.Struct("<IIQ6Q16s4Q") in worker.py */

struct reply {
	i64 ret;      /* syscall return, child pid, or pages touched */
	u64 time_ns;  /* measured around the syscall / the touches / the exec */
	i64 sig;      /* signal that stopped a touch, else 0 */
	u64 done;     /* pages touched before the signal */
}; /* 32 bytes: struct.Struct("<qQqQ") */

struct region_hdr {
	char name[16];
	u64 parent_region; /* the forking parent's region, unmapped by the child */
};

struct iovec {
	void *base;
	u64 len;
};

struct msghdr {
	void *name;
	u32 namelen;
	u32 pad0;
	struct iovec *iov;
	u64 iovlen;
	void *control;
	u64 controllen;
	i32 flags;
	u32 pad1;
};

struct cmsghdr {
	u64 len;
	i32 level;
	i32 type;
};

struct timespec {
	i64 sec;
	i64 nsec;
};

struct kernel_sigaction {
	void *handler;
	u64 flags;
	void *restorer;
	u64 mask;
};

static inline i64 sys6(i64 n, i64 a, i64 b, i64 c, i64 d, i64 e, i64 f)
{
	register i64 r10 __asm__("r10") = d;
	register i64 r8 __asm__("r8") = e;
	register i64 r9 __asm__("r9") = f;
	i64 ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

#define sys1(n, a) sys6(n, (i64)(a), 0, 0, 0, 0, 0)
#define sys2(n, a, b) sys6(n, (i64)(a), (i64)(b), 0, 0, 0, 0)
#define sys3(n, a, b, c) sys6(n, (i64)(a), (i64)(b), (i64)(c), 0, 0, 0)
#define sys4(n, a, b, c, d) sys6(n, (i64)(a), (i64)(b), (i64)(c), (i64)(d), 0, 0)

/* gcc may emit calls to these even with -ffreestanding. */
void *memset(void *d, int c, u64 n)
{
	unsigned char *p = d;
	while (n--)
		*p++ = (unsigned char)c;
	return d;
}

void *memcpy(void *d, const void *s, u64 n)
{
	unsigned char *p = d;
	const unsigned char *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

__attribute__((noreturn)) static void die(int code)
{
	for (;;)
		sys1(SYS_exit_group, code);
}

static u64 now_ns(void)
{
	struct timespec ts;
	sys2(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
	return (u64)ts.sec * 1000000000UL + (u64)ts.nsec;
}

/* Assembly: entry, stack switch, clone onto a fresh stack, the page toucher, sigreturn. */
extern long touch(u64 addr, u64 pages, u64 mode, u64 value, u64 stamp);
extern char touch_end[], touch_fault[];
extern long clone_to(u64 flags, void *top, void (*fn)(void *, long), void *a0, long a1);
extern __attribute__((noreturn)) void run_on_stack(void *top, void (*fn)(void *, u64),
						    void *a0, u64 a1);
extern void restore_rt(void);

__asm__(
	".text\n"
	".globl _start\n"
	"_start:\n"
	"	xor %ebp, %ebp\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call start_c\n"
	"	hlt\n"

	/* run_on_stack(top, fn, a0, a1): rsp = top, then fn(a0, a1); never returns */
	".globl run_on_stack\n"
	"run_on_stack:\n"
	"	mov %rsi, %rax\n"
	"	mov %rdi, %rsp\n"
	"	mov %rdx, %rdi\n"
	"	mov %rcx, %rsi\n"
	"	xor %ebp, %ebp\n"
	"	call *%rax\n"
	"	hlt\n"

	/* clone_to(flags, top, fn, a0, a1): the child starts on `top` and runs fn(a0, a1).
	 * fn and its arguments travel on the child's stack (the registers would not survive
	 * the parent's use of them). */
	".globl clone_to\n"
	"clone_to:\n"
	"	mov %rdx, -24(%rsi)\n"
	"	mov %rcx, -16(%rsi)\n"
	"	mov %r8, -8(%rsi)\n"
	"	sub $24, %rsi\n"
	"	xor %edx, %edx\n"
	"	xor %r10d, %r10d\n"
	"	xor %r8d, %r8d\n"
	"	mov $56, %eax\n"
	"	syscall\n"
	"	test %rax, %rax\n"
	"	jnz 1f\n"
	"	xor %ebp, %ebp\n"
	"	pop %rax\n"
	"	pop %rdi\n"
	"	pop %rsi\n"
	"	call *%rax\n"
	"	hlt\n"
	"1:	ret\n"

	/* touch(addr, pages, mode, value, stamp): touch each page once, in order.  Returns
	 * pages touched; after a fault the handler resumes at touch_fault with rax = signal,
	 * which returns (signal << 32) | pages touched.  Only caller-saved registers are used
	 * and the fault can only hit the first access to a page (the first byte). */
	".globl touch\n"
	"touch:\n"
	"	mov %rcx, %r9\n"
	"	mov %r8, %r10\n"
	"	mov %rdi, %r11\n"
	"	xor %r8d, %r8d\n"
	"2:	cmp %rsi, %r8\n"
	"	jae 6f\n"
	"	test %rdx, %rdx\n"
	"	jnz 3f\n"
	"	movzbl (%r11), %eax\n"
	"	jmp 5f\n"
	"3:	cmp $2, %rdx\n"
	"	jne 4f\n"
	"	mov %r10, (%r11)\n"
	"	lea 8(%r11), %rdi\n"
	"	mov $4088, %ecx\n"
	"	mov $0x5a, %eax\n"
	"	rep stosb\n"
	"	inc %r10\n"
	"	jmp 5f\n"
	"4:	mov %r11, %rdi\n"
	"	mov $4096, %ecx\n"
	"	mov %r9, %rax\n"
	"	rep stosb\n"
	"5:	add $4096, %r11\n"
	"	inc %r8\n"
	"	jmp 2b\n"
	"6:	mov %r8, %rax\n"
	"	ret\n"
	".globl touch_fault\n"
	"touch_fault:\n"
	"	shl $32, %rax\n"
	"	or %r8, %rax\n"
	"	ret\n"
	".globl touch_end\n"
	"touch_end:\n"

	".globl restore_rt\n"
	"restore_rt:\n"
	"	mov $15, %eax\n"
	"	syscall\n"
	"	hlt\n");

/* SIGSEGV/SIGBUS: a fault inside touch() is a scenario outcome; resume at touch_fault.
 * Anything else is a worker bug: exit with a code the controller recognises. */
static void on_fault(int sig, void *info, void *ucv)
{
	(void)info;
	/* struct ucontext: flags, link, stack_t (24 B), then sigcontext: r8..r15, rdi, rsi,
	 * rbp, rbx, rdx, rax (13), rcx, rsp, rip (16). */
	u64 *gregs = (u64 *)((char *)ucv + 40);
	u64 rip = gregs[16];
	if (rip >= (u64)touch && rip < (u64)touch_end) {
		gregs[16] = (u64)touch_fault;
		gregs[13] = (u64)sig;
		return;
	}
	die(100 + sig);
}

static void install_handlers(void)
{
	struct kernel_sigaction sa;
	sa.handler = (void *)on_fault;
	sa.flags = SA_SIGINFO | SA_RESTORER;
	sa.restorer = (void *)restore_rt;
	sa.mask = 0;
	if (sys4(SYS_rt_sigaction, SIGSEGV, &sa, 0, 8) < 0)
		die(3);
	if (sys4(SYS_rt_sigaction, SIGBUS, &sa, 0, 8) < 0)
		die(3);
}

static u64 parse_hex(const char *s)
{
	u64 v = 0;
	for (; *s; s++) {
		char c = *s;
		if (c >= '0' && c <= '9')
			v = v * 16 + (u64)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v * 16 + (u64)(c - 'a' + 10);
		else
			break;
	}
	return v;
}

static void put_hex(char *out, u64 v)
{
	for (int i = 15; i >= 0; i--) {
		int d = (int)(v & 15);
		out[i] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v >>= 4;
	}
	out[16] = 0;
}

/* Find the exec-time [stack] in /proc/self/maps and unmap it: it has an anon_vma (exec
 * faulted argv and envp into it), and fork would clone it. */
static void unmap_exec_stack(void)
{
	char buf[8192];
	u64 len = 0;
	i64 fd = sys2(SYS_open, "/proc/self/maps", 0);
	if (fd < 0)
		die(4);
	for (;;) {
		i64 n = sys3(SYS_read, fd, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			break;
		len += (u64)n;
		if (len >= sizeof(buf) - 1)
			die(5);
	}
	sys1(SYS_close, fd);
	buf[len] = 0;
	char *line = buf;
	while (*line) {
		char *end = line;
		while (*end && *end != '\n')
			end++;
		/* does this line end with "[stack]"? */
		if (end - line > 7 && end[-7] == '[' && end[-6] == 's' && end[-1] == ']' &&
		    end[-2] == 'k' && end[-3] == 'c') {
			u64 start = parse_hex(line);
			char *p = line;
			while (*p != '-')
				p++;
			u64 stop = parse_hex(p + 1);
			if (sys2(SYS_munmap, start, stop - start) < 0)
				die(6);
			return;
		}
		line = *end ? end + 1 : end;
	}
}

static void set_name(const char *name)
{
	char comm[16];
	for (int i = 0; i < 16; i++)
		comm[i] = name[i];
	comm[15] = 0;
	sys2(SYS_prctl, PR_SET_NAME, comm);
}

static void send_reply(const struct reply *r)
{
	for (;;) {
		i64 n = sys3(SYS_write, CTL_FD, r, sizeof(*r));
		if (n == (i64)sizeof(*r))
			return;
		if (n != -EINTR)
			die(0); /* controller gone */
	}
}

/* Receive one command; *fd is the SCM_RIGHTS descriptor that came with it, or -1. */
static int recv_cmd(struct cmd *c, i32 *fd)
{
	union {
		struct cmsghdr h;
		char buf[64];
	} ctl;
	struct iovec iov = {c, sizeof(*c)};
	struct msghdr msg;
	memset(&msg, 0, sizeof(msg));
	msg.iov = &iov;
	msg.iovlen = 1;
	msg.control = &ctl;
	msg.controllen = sizeof(ctl);
	*fd = -1;
	for (;;) {
		i64 n = sys3(SYS_recvmsg, CTL_FD, &msg, 0);
		if (n == -EINTR)
			continue;
		if (n <= 0)
			return 0; /* EOF or error: the controller is gone */
		if (msg.controllen >= sizeof(struct cmsghdr) + 4 && ctl.h.level == SOL_SOCKET &&
		    ctl.h.type == SCM_RIGHTS)
			*fd = *(i32 *)(ctl.buf + sizeof(struct cmsghdr));
		return n == (i64)sizeof(*c);
	}
}

static void serve(struct region_hdr *self);

static void child_main(void *region, long fd)
{
	struct region_hdr *self = region;
	if (sys2(SYS_dup2, fd, CTL_FD) < 0)
		die(7);
	sys1(SYS_close, fd);
	/* the parent's region came along as a shared mapping; it is not ours */
	if (self->parent_region)
		sys2(SYS_munmap, self->parent_region, REGION_SIZE);
	self->parent_region = 0;
	set_name(self->name);
	serve(self);
}

static i64 do_fork(struct region_hdr *self, const struct cmd *c, i32 fd, u64 *ns)
{
	if (fd < 0)
		return -EBADF;
	i64 r = sys6(SYS_mmap, 0, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		     -1, 0);
	if (r < 0 && r > -4096) {
		sys1(SYS_close, fd);
		return r;
	}
	struct region_hdr *child = (struct region_hdr *)r;
	memcpy(child->name, c->name, 16);
	child->parent_region = (u64)self;
	u64 t0 = now_ns();
	i64 pid = clone_to(SIGCHLD, (char *)child + REGION_SIZE, child_main, child, fd);
	*ns = now_ns() - t0;
	sys1(SYS_close, fd);
	sys2(SYS_munmap, child, REGION_SIZE);
	return pid;
}

static i64 do_exec(const struct cmd *c)
{
	char start[17], name[16];
	put_hex(start, now_ns());
	memcpy(name, c->name, 16);
	name[15] = 0;
	char *argv[] = {"cowctx-worker", start, name, 0};
	char *envp[] = {0};
	return sys3(SYS_execve, "/proc/self/exe", argv, envp);
}

static void serve(struct region_hdr *self)
{
	(void)self;
	for (;;) {
		struct cmd c;
		struct reply r;
		i32 fd;
		if (!recv_cmd(&c, &fd))
			die(0);
		if (fd >= 0 && c.op != OP_FORK) {
			sys1(SYS_close, fd);
			fd = -1;
		}
		memset(&r, 0, sizeof(r));
		u64 t0, t1;
		switch (c.op) {
		case OP_SYSCALL:
			t0 = now_ns();
			r.ret = sys6((i64)c.nr, (i64)c.a[0], (i64)c.a[1], (i64)c.a[2], (i64)c.a[3],
				     (i64)c.a[4], (i64)c.a[5]);
			t1 = now_ns();
			r.time_ns = t1 - t0;
			break;
		case OP_TOUCH: {
			t0 = now_ns();
			long v = touch(c.a[0], c.a[1], c.a[2], c.a[3], c.a[4]);
			t1 = now_ns();
			r.time_ns = t1 - t0;
			r.sig = (u64)v >> 32;
			r.done = (u64)v & 0xffffffffUL;
			r.ret = 0;
			break;
		}
		case OP_FORK:
			r.ret = do_fork(self, &c, fd, &r.time_ns);
			break;
		case OP_EXIT:
			die(0);
		case OP_EXEC:
			r.ret = do_exec(&c); /* only returns on failure */
			break;
		default:
			r.ret = -EINVAL;
		}
		send_reply(&r);
	}
}

/* Running on the new shared stack: drop the exec stack, install handlers, say ready. */
static void worker_main(void *region, u64 exec_start_ns)
{
	struct region_hdr *self = region;
	unmap_exec_stack();
	install_handlers();
	set_name(self->name);
	struct reply r;
	memset(&r, 0, sizeof(r));
	r.ret = 0;
	r.time_ns = exec_start_ns ? now_ns() - exec_start_ns : 0;
	send_reply(&r);
	serve(self);
}

/* On the exec stack: argv[1] is the exec start time (hex, "0" for the first start),
 * argv[2] the comm.  Copy what is needed to a fresh shared region, then move onto it. */
__attribute__((used)) void start_c(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	u64 start_ns = argc > 1 ? parse_hex(argv[1]) : 0;
	i64 r = sys6(SYS_mmap, 0, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		     -1, 0);
	if (r < 0 && r > -4096)
		die(2);
	struct region_hdr *self = (struct region_hdr *)r;
	memset(self->name, 0, 16);
	if (argc > 2)
		for (int i = 0; i < 15 && argv[2][i]; i++)
			self->name[i] = argv[2][i];
	self->parent_region = 0;
	run_on_stack((char *)self + REGION_SIZE, worker_main, self, start_ns);
}
