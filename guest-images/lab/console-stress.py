#!/usr/bin/env python3
"""console-stress.py: large stdout streams through isol's virtio-console, repeated, under a
watchdog. Run it in the lab (it needs a fast /dev/kvm):

    isol lab -- guest-images/lab/console-stress.py [--budget SECONDS] [--mib N] [--stall SECONDS]
                                                    [--variants a,b,...] [--isol PATH]
    isol lab -- guest-images/lab/console-stress.py [--budget SECONDS] [--limit SECONDS] --repeat CMD...

Each run is `isol run --backend kvm busybox -- ...` writing N MiB, read on the host in one of
several ways (VARIANTS below). The stream's bytes are counted and hashed and compared with what
the workload wrote. A watchdog watches the byte count: when nothing arrives for --stall seconds
(default 30) it prints evidence before killing the run — every thread of the VMM process
(comm, state, wchan, kernel stack, syscall), `top -bn1`, the lab kernel's last messages — so a
stall can be told apart from the lab's nested-KVM spin (docs/lab.md, "Known fault": a vCPU
thread in state R in KVM_RUN) and from a lost wakeup in the VMM or the guest (all threads
sleeping, the vCPU halted: KVM's debugfs counters, read twice 3 s apart, are printed too).
Variants: pipe (a fast reader), slow (reads in bursts with 1-4 s pauses), interleaved (stdout
and stderr alternating 1 MiB at a time, each to its own pipe), merged (the same into one pipe),
stdin-idle (`-i`, stdin a pipe that stays open and silent), stdin-echo (`-i` and `cat`: the
stream goes in and comes back out), file (stdout a regular file), trickle (a reader that sleeps
4 ms per read), nonblock (stdout a pipe whose open file description is O_NONBLOCK, read in
bursts). New runs start until --budget seconds (default 780) have passed; one line per run,
then a summary. Exit status 1 if a run stalled or delivered wrong bytes.

--repeat CMD... runs CMD (e.g. the parity test binary filtered to its 100 MiB stream) again and
again instead, with the same evidence when one runs past --limit seconds (default 300) or its
VMM processes (the command's descendants) write nothing for --stall seconds (/proc/PID/io
wchar: the guest's output reaching the host). Each of those runs has a flight recorder: the lab
kernel's kvm tracepoints (kvm_exit with the guest's RIP, kvm_inj_exception, kvm_userspace_exit) in
an emptied, overwriting ring buffer; a run that ends with a non-zero status gets its last exits
printed, symbolized with $ISOL_KERNEL, and a shutdown exit (a triple fault) its RIP and the event
the CPU was delivering — where the guest died, which isol's own register line cannot say on
kvm_amd (docs/vmm.md, "How a VM ends").
"""

import argparse
import bisect
import hashlib
import os
import random
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(msg):
    print(f"console-stress: [{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


T0 = time.monotonic()


def yes_abc(n):
    """The bytes of `yes abc | head -c n`."""
    return (b"abc\n" * (n // 4 + 1))[:n]


class Sink:
    """Reads a stream to EOF, counting and hashing; `pause` shapes a slow reader."""

    def __init__(self, f, pause=None):
        self.f, self.pause = f, pause
        self.n, self.h = 0, hashlib.sha256()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        fd = self.f.fileno()
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            self.n += len(b)
            self.h.update(b)
            if self.pause:
                self.pause(self.n)


def slow_pause(n, state={"next": 0}):
    # Bursts: read 4-12 MiB at full speed, then stop for 1-4 s (the pipe fills, the VMM's
    # writer blocks, the device stops taking buffers, the guest's queue fills and its
    # writes block), then go on.
    if n >= state["next"]:
        if state["next"]:
            time.sleep(random.uniform(1, 4))
        state["next"] = n + (random.randint(4, 12) << 20)


def trickle_pause(n):
    time.sleep(0.004)  # ~16 MB/s at 64 KiB reads, less at smaller ones


def thread_states(pid):
    """Every thread of pid: comm, state, wchan, syscall, kernel stack (bounded reads: a
    task running in the kernel can block a read of its syscall file)."""
    out = []
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError as e:
        return [f"  pid {pid}: {e}"]
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"

        def rd(name):
            try:
                r = subprocess.run(["timeout", "2", "cat", f"{base}/{name}"],
                                   capture_output=True, text=True)
                return r.stdout.strip() if r.returncode == 0 else f"<{r.returncode}>"
            except OSError as e:
                return f"<{e}>"

        stat = rd("stat")
        fields = stat.rsplit(")", 1)[-1].split()
        state = fields[0] if fields else "?"
        utime, stime = (fields[11], fields[12]) if len(fields) > 12 else ("?", "?")
        out.append(f"  thread {tid} {rd('comm')}: state {state} utime {utime} stime {stime}"
                   f" wchan {rd('wchan')} syscall {rd('syscall').split(' ')[0]}")
        for line in rd("stack").splitlines():
            out.append(f"      {line}")
    return out


KVM_COUNTERS = ("exits", "halt_exits", "halt_successful_poll", "halt_wakeup", "irq_exits",
                "irq_injections", "io_exits", "mmio_exits", "signal_exits", "request_irq_exits")


def kvm_stats(pid):
    """The VM's KVM counters from debugfs (the lab kernel's), by name."""
    d = "/sys/kernel/debug/kvm"
    if not os.path.isdir(d):
        subprocess.run(["mount", "-t", "debugfs", "debugfs", "/sys/kernel/debug"],
                       capture_output=True)
    out = {}
    try:
        vms = [v for v in os.listdir(d) if v.startswith(f"{pid}-")]
    except OSError:
        return out
    for vm in vms:
        for k in KVM_COUNTERS:
            try:
                with open(f"{d}/{vm}/{k}") as f:
                    out[f"{vm}/{k}"] = f.read().strip()
            except OSError:
                pass
    return out


def guest_symbols():
    """(address, name) of the guest kernel's symbols, sorted ($ISOL_KERNEL, not stripped)."""
    k = os.environ.get("ISOL_KERNEL")
    if not k:
        return []
    r = subprocess.run(["nm", "-n", k], capture_output=True, text=True)
    syms = []
    for line in r.stdout.splitlines():
        f = line.split()
        if len(f) == 3 and f[1] in "tTwW":
            syms.append((int(f[0], 16), f[2]))
    return syms


EXIT_RE = re.compile(r"reason (.+?) rip (0x[0-9a-f]+)")


def symbolizer():
    """A function from a guest address to `symbol+offset` (or hex)."""
    syms = guest_symbols()
    addrs = [a for a, _ in syms]

    def where(rip):
        i = bisect.bisect_right(addrs, rip) - 1
        return f"{syms[i][1]}+{rip - syms[i][0]:#x}" if i >= 0 else hex(rip)
    return where


TRACE = "/sys/kernel/tracing"
RECORDED = ("kvm_exit", "kvm_userspace_exit", "kvm_inj_exception")


def trace_put(name, v):
    with open(f"{TRACE}/{name}", "w") as f:
        f.write(v)


def mount_tracefs():
    """Mounts tracefs at TRACE unless it is there."""
    if not os.path.exists(f"{TRACE}/events"):
        subprocess.run(["mount", "-t", "tracefs", "tracefs", TRACE], capture_output=True)


def recorder_start():
    """A flight recorder for the next run: the lab kernel's kvm tracepoints (every VM exit
    with the guest's RIP) into an emptied, overwriting ring buffer. After a shutdown exit
    this is where the guest's RIP is: kvm_amd resets the vCPU before isol can read its
    registers (docs/vmm.md, "How a VM ends"). False if tracing is not available."""
    mount_tracefs()
    try:
        trace_put("tracing_on", "0")
        trace_put("buffer_size_kb", "8192")
        trace_put("options/overwrite", "1")
        trace_put("trace", "")
        for e in RECORDED:
            trace_put(f"events/kvm/{e}/enable", "1")
        trace_put("tracing_on", "1")
        return True
    except OSError as e:
        log(f"no flight recorder: {e}")
        return False


VECTORS = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 6: "#UD", 8: "#DF", 10: "#TS", 11: "#NP",
           12: "#SS", 13: "#GP", 14: "#PF", 17: "#AC", 18: "#MC"}


def recorder_dump(last=60):
    """What the recorder holds at the end of a failed run: the shutdown exits (a triple
    fault: RIP and the event being delivered, from intr_info) and the last exits before the
    end, symbolized."""
    try:
        trace_put("tracing_on", "0")
        with open(f"{TRACE}/trace") as f:
            lines = [ln for ln in f.read().splitlines() if not ln.startswith("#")]
    except OSError as e:
        log(f" no flight recorder: {e}")
        return
    where = symbolizer()
    log(f" flight recorder (lab kvm tracepoints, {len(lines)} records kept):")
    for line in lines:
        m = EXIT_RE.search(line)
        if m and m.group(1) == "shutdown":
            info = re.search(r"intr_info (0x[0-9a-f]+)", line)
            ev = int(info.group(1), 16) if info else 0
            event = (f"delivering type {(ev >> 8) & 7} vector {ev & 0xff} "
                     f"{VECTORS.get(ev & 0xff, '')}" if ev >> 31 else "no event in delivery")
            print(f"    SHUTDOWN (triple fault) at {where(int(m.group(2), 16))}: {event}",
                  file=sys.stderr)
    for line in lines[-last:]:
        m = EXIT_RE.search(line)
        sym = f"  [{where(int(m.group(2), 16))}]" if m else ""
        print(f"    {line.strip()}{sym}", file=sys.stderr)
    sys.stderr.flush()


def guest_exits(secs):
    """What the lab's KVM sees the guest do for secs: kvm_exit events counted by reason and
    guest RIP (symbolized), most frequent first. No exits at all: the vCPU is halted or
    stuck inside the lab's KVM."""
    mount_tracefs()
    try:
        trace_put("trace", "")
        trace_put("buffer_size_kb", "4096")
        trace_put("events/kvm/kvm_exit/enable", "1")
        trace_put("tracing_on", "1")
        time.sleep(secs)
        trace_put("events/kvm/kvm_exit/enable", "0")
        with open(f"{TRACE}/trace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        return [f"no trace: {e}"]
    where = symbolizer()
    counts = {}
    for line in lines:
        m = EXIT_RE.search(line)
        if not m:
            continue
        key = f"{m.group(1)} {where(int(m.group(2), 16))}"
        counts[key] = counts.get(key, 0) + 1
    out = [f"{sum(counts.values())} exits in {secs} s"]
    out += [f"{n:7d} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])[:20]]
    return out


def written(pid):
    """Bytes pid has written (write syscalls, any fd): its /proc/PID/io wchar."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid):
    kids = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                kids += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return kids + [d for k in kids for d in descendants(k)]


def evidence(proc, why):
    log(f"STALL: {why}; evidence follows")
    for pid in [proc.pid] + descendants(proc.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:120]
        except OSError:
            cmd = "?"
        log(f" process {pid}: {cmd}")
        for line in thread_states(pid):
            print(line, file=sys.stderr)
    for cmd in (["top", "-bn1"], ["sh", "-c", "dmesg | tail -n 40"]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        log(f" {' '.join(cmd)}:")
        for line in r.stdout.splitlines()[:40]:
            print(f"    {line}", file=sys.stderr)
    pids = [proc.pid] + descendants(proc.pid)
    kvm_before = {k: v for p in pids for k, v in kvm_stats(p).items()}
    io_before = {p: written(p) for p in pids}
    # A second look: does any thread's CPU time move, does the VMM still write, does the
    # guest exit or halt?
    time.sleep(3)
    log(" 3 s later (wchar: bytes the process wrote so far):")
    for pid in pids:
        print(f"  process {pid}: wchar {io_before[pid]} -> {written(pid)}", file=sys.stderr)
        for line in thread_states(pid):
            if line.startswith("  thread"):
                print(line, file=sys.stderr)
    kvm_after = {k: v for p in pids for k, v in kvm_stats(p).items()}
    log(f" the VM's KVM counters (debugfs), then and 3 s later ({len(kvm_after)} found):")
    for k in sorted(kvm_after):
        print(f"    {k} {kvm_before.get(k)} -> {kvm_after[k]}", file=sys.stderr)
    log(" the guest's VM exits over 2 s (kvm:kvm_exit), by reason and guest RIP:")
    for line in guest_exits(2):
        print(f"    {line}", file=sys.stderr)
    sys.stderr.flush()


def run_one(isol, variant, mib, stall, tmp):
    n = mib << 20
    argv = [isol, "run", "--backend", "kvm"]
    stdin = subprocess.DEVNULL
    if variant in ("stdin-idle", "stdin-echo"):
        argv.append("-i")
        stdin = subprocess.PIPE
    if variant == "interleaved":
        # stdout and stderr alternate, 1 MiB at a time, each to its own host pipe.
        script = (f"i=0; while [ $i -lt {mib // 2} ]; do yes abc | head -c 1048576; "
                  f"yes abc | head -c 1048576 >&2; i=$((i+1)); done")
        n_out = n_err = (mib // 2) << 20
    elif variant == "merged":
        # The same, both ports into one host pipe (two writer threads, one fd).
        script = (f"i=0; while [ $i -lt {mib // 2} ]; do head -c 1048576 /dev/zero; "
                  f"head -c 1048576 /dev/zero >&2; i=$((i+1)); done")
        n_out, n_err = n, 0
    elif variant == "stdin-echo":
        script = "cat"
        n_out, n_err = n, 0
    else:
        script = f"yes abc | head -c {n}"
        n_out, n_err = n, 0
    argv += ["busybox", "--", "sh", "-c", script]

    out_path = os.path.join(tmp, "out")
    stdout_f = open(out_path, "wb") if variant == "file" else subprocess.PIPE
    nb_read = None
    if variant == "nonblock":
        # isol's stdout a pipe whose (shared) open file description is O_NONBLOCK, read
        # with pauses: the VMM's writes meet EAGAIN.
        nb_read, stdout_f = os.pipe()
        os.set_blocking(stdout_f, False)
    stderr = subprocess.STDOUT if variant == "merged" else subprocess.PIPE
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout_f, stderr=stderr)
    pause = {"slow": slow_pause, "nonblock": slow_pause, "trickle": trickle_pause}.get(variant)
    slow_pause.__defaults__[0]["next"] = 0
    if nb_read is not None:
        os.close(stdout_f)
        out_sink = Sink(os.fdopen(nb_read, "rb"), pause)
    else:
        out_sink = Sink(proc.stdout, pause) if proc.stdout else None
    err_sink = Sink(proc.stderr) if proc.stderr else None
    feeder = None
    if variant == "stdin-echo":
        def feed():
            chunk = yes_abc(1 << 16)
            left = n
            try:
                while left:
                    k = min(left, len(chunk))
                    proc.stdin.write(chunk[:k])
                    left -= k
                proc.stdin.close()
            except BrokenPipeError:
                pass
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()

    def progress():
        p = (out_sink.n if out_sink else 0) + (err_sink.n if err_sink else 0)
        if variant == "file":
            try:
                p += os.path.getsize(out_path)
            except OSError:
                pass
        return p

    last, last_t, stalled = -1, time.monotonic(), False
    while proc.poll() is None:
        time.sleep(0.5)
        p = progress()
        if p != last:
            last, last_t = p, time.monotonic()
        elif time.monotonic() - last_t > stall:
            evidence(proc, f"{variant}: no byte for {stall} s after {p} bytes "
                           f"({time.monotonic() - start:.0f} s into the run)")
            stalled = True
            proc.kill()
            break
    rc = proc.wait()
    if proc.stdin:
        try:
            proc.stdin.close()
        except OSError:
            pass
    for s in (out_sink, err_sink):
        if s:
            s.t.join(10)
    secs = time.monotonic() - start
    if variant == "file":
        stdout_f.close()
        h = hashlib.sha256()
        with open(out_path, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""):
                h.update(b)
        got_out, got_hash = os.path.getsize(out_path), h.hexdigest()
        os.unlink(out_path)
    else:
        got_out, got_hash = out_sink.n, out_sink.h.hexdigest()
    got_err = err_sink.n if err_sink else 0
    if variant == "merged":
        want_hash = hashlib.sha256(bytes(n)).hexdigest()
    else:
        want = yes_abc(1 << 20) if variant == "interleaved" else yes_abc(n)
        want_hash = (hashlib.sha256(want * (mib // 2)).hexdigest()
                     if variant == "interleaved" else hashlib.sha256(want).hexdigest())
    ok = (not stalled and rc == 0 and got_out == n_out and got_err == n_err
          and got_hash == want_hash)
    if variant == "interleaved" and ok:
        ok = err_sink.h.hexdigest() == want_hash
    return ok, stalled, rc, got_out, got_err, secs


def repeat(cmd, budget, limit, stall):
    """Runs cmd again and again (its output passes through); evidence on a run past limit."""
    n = bad = 0
    while time.monotonic() - T0 < budget:
        n += 1
        recording = recorder_start()
        start = time.monotonic()
        proc = subprocess.Popen(cmd)
        # Progress: what the command's VMMs (its descendants) have written, i.e. the
        # guest's output reaching the host.
        last, last_t, why = -1, time.monotonic(), None
        while proc.poll() is None:
            time.sleep(1)
            kids = descendants(proc.pid)
            w = sum(written(k) for k in kids)
            if w != last or not kids:
                last, last_t = w, time.monotonic()
            if time.monotonic() - last_t > stall:
                why = f"no byte written by {kids} for {stall:.0f} s (wchar {w})"
            elif time.monotonic() - start > limit:
                why = f"not over after {limit:.0f} s"
            if why:
                break
        if why and proc.poll() is None:
            evidence(proc, f"run {n} of {' '.join(cmd)}: {why}")
            for pid in descendants(proc.pid):
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
            proc.kill()
        rc = proc.wait()
        bad += rc != 0
        if rc != 0 and not why and recording:
            recorder_dump()
        print(f"repeat run {n}: rc={rc} {time.monotonic() - start:.1f}s", flush=True)
    print(f"repeat summary: {n} runs, {bad} failed", flush=True)
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=780)
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--stall", type=float, default=30)
    ap.add_argument("--variants",
                    default="pipe,slow,interleaved,merged,stdin-idle,stdin-echo,file,trickle,nonblock")
    ap.add_argument("--isol", default=os.path.join(ROOT, "target/x86_64-unknown-linux-gnu/debug/isol"))
    ap.add_argument("--repeat", nargs=argparse.REMAINDER, metavar="CMD",
                    help="instead: run CMD repeatedly until the budget is spent; a run past "
                         "--limit seconds gets the same evidence, then is killed")
    ap.add_argument("--limit", type=float, default=300)
    a = ap.parse_args()
    if a.repeat:
        sys.exit(repeat(a.repeat, a.budget, a.limit, a.stall))
    if not os.access("/dev/kvm", os.W_OK):
        sys.exit("console-stress: no /dev/kvm; run it in the lab: isol lab -- " + sys.argv[0])
    variants = a.variants.split(",")
    tmp = os.environ.get("TMPDIR", "/run")
    subprocess.run([a.isol, "run", "--backend", "kvm", "busybox", "true"], check=True,
                   stdout=subprocess.DEVNULL)
    results = []
    i = 0
    while time.monotonic() - T0 < a.budget:
        v = variants[i % len(variants)]
        i += 1
        ok, stalled, rc, o, e, secs = run_one(a.isol, v, a.mib, a.stall, tmp)
        results.append((v, ok, stalled))
        print(f"run {i} {v}: {'ok' if ok else 'STALLED' if stalled else 'WRONG'} rc={rc} "
              f"stdout={o} stderr={e} {secs:.1f}s {o / secs / 1e6:.1f}MB/s", flush=True)
    bad = [r for r in results if not r[1]]
    print(f"summary: {len(results)} runs of {a.mib} MiB, {sum(r[2] for r in results)} stalled, "
          f"{len(bad) - sum(r[2] for r in bad)} wrong; variants {','.join(variants)}", flush=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
