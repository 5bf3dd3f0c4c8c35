#!/bin/bash
# A/B of the virtio-net card's notification features, in the lab:
#   isol lab -- guest-images/bench/net-ab.sh      (MIB=16, MODES="base eidx both base eidx both")
# A VM on the bridge receives MIB MiB from the lab host's busybox nc and sends MIB MiB to it;
# per run: seconds, the card's interrupts (the guest's /proc/interrupts), its exits to the VMM
# (--trace-exits). Modes: base = ISOL_NET_WITHOUT=event_idx,sticky_irq (the card before
# 2026-12-07), eidx = sticky_irq masked, both = nothing masked. docs/benchmarks.md, "Network".
cd "$(dirname "$0")/../.."
isol=${ISOL:-$PWD/target/x86_64-unknown-linux-gnu/debug/isol}
bb=/bin/busybox
MIB=${MIB:-16}
for mode in ${MODES:-base eidx both base eidx both}; do
  case $mode in
    base) export ISOL_NET_WITHOUT=event_idx,sticky_irq ;;
    eidx) export ISOL_NET_WITHOUT=sticky_irq ;;
    both) unset ISOL_NET_WITHOUT ;;
  esac
  seen=" $seen "; case "$seen" in *" $mode "*) TX=0 ;; *) TX=1 ;; esac; seen="$seen $mode" 
  # VM receives.
  $isol run -i --backend kvm --network bridge --trace-exits --timeout 200 busybox sh -c \
    'ip -4 -o addr show eth0; nc -l -p 5001 > /dev/null; grep -E "virtio[0-9]" /proc/interrupts | tr -s " " | tr "\n" ";"; echo; grep eth0 /proc/net/dev | tr -s " "' > /tmp/rx.out 2> /tmp/rx.err < <(sleep 250) &
  vm=$!
  addr=
  for i in $(seq 1 600); do addr=$(awk '/inet/{split($4,a,"/"); print a[1]; exit}' /tmp/rx.out 2>/dev/null); [ -n "$addr" ] && break; sleep 0.1; done
  sleep 0.5
  t0=$(date +%s.%N)
  head -c $((MIB<<20)) /dev/zero | $bb nc $addr 5001
  t1=$(date +%s.%N)
  wait $vm
  echo "== $mode VM-receives $MIB MiB: $(echo "$t1 - $t0" | bc) s"
  tail -n +2 /tmp/rx.out
  grep -E "vCPU exits by device|virtio-net|^  (mmio|pio)" /tmp/rx.err | head -12
  [ "$TX" = 1 ] || continue
  # VM sends.
  $bb nc -l -p 5002 > /dev/null < <(sleep 250) &
  lst=$!
  sleep 0.3
  $isol run --backend kvm --network bridge --trace-exits --timeout 200 busybox sh -c \
    'gw=$(ip route | awk "/default/{print \$3}"); s=$(date +%s.%N 2>/dev/null || date +%s); t0=$(cut -d" " -f1 /proc/uptime); head -c '$((MIB<<20))' /dev/zero | nc $gw 5002; t1=$(cut -d" " -f1 /proc/uptime); echo "guest-timed $t0 $t1"; grep -E "virtio[0-9]" /proc/interrupts | tr -s " " | tr "\n" ";"; echo; grep eth0 /proc/net/dev | tr -s " "' > /tmp/tx.out 2> /tmp/tx.err
  kill $lst 2>/dev/null; wait $lst 2>/dev/null
  echo "== $mode VM-sends $MIB MiB: $(awk '/guest-timed/{print $3-$2}' /tmp/tx.out) s (guest uptime clock)"
  grep -v guest-timed /tmp/tx.out
  grep -E "vCPU exits by device|virtio-net" /tmp/tx.err | head -4
done

