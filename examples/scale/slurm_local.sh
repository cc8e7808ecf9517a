#!/bin/bash
# label_shards.sbatch for real on a one-node Slurm set up on this machine: Debian's slurm-wlm and
# munge (installed when absent; needs root), a one-partition slurm.conf for this host, the array job
# and its dependent merge submitted, waited for, and the merged file checked. By hand, not in
# `make test`; run it from a checkout after `make install`:
#
#   bash examples/scale/slurm_local.sh [SHARDS] [PAIRS]
#
# It labels PAIRS pairs (default 12, made from examples/prompts/redteam.jsonl) with the embedded
# model in SHARDS array tasks (default 3). A real cluster has its own slurm.conf: there, only the
# two sbatch lines below are yours to copy.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARDS=${1:-3}
PAIRS=${2:-12}
WORK=${WORK:-/tmp/caikit-slurm}
export PATH="$ROOT/.venv/bin:$PATH" HF_HUB_OFFLINE=1

if ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge: the key the daemons and the commands authenticate with
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create 2>/dev/null || /usr/sbin/create-munge-key -f
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

# slurm.conf: this host is the controller and the only node
HOST=$(hostname -s)
MEMORY=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=caikit-local
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$HOST CPUs=$(nproc) RealMemory=$MEMORY State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 1; done
sinfo

# the data: PAIRS prompts, each with a helpful and a curt answer
rm -rf "$WORK" && mkdir -p "$WORK/logs" && cd "$WORK"
head -n "$PAIRS" "$ROOT/examples/prompts/redteam.jsonl" | python -c '
import json, sys
for line in sys.stdin:
    prompt = json.loads(line)["prompt"]
    print(json.dumps({"prompt": prompt, "chosen": "I cannot help with that, but here is a safer way to think about it.", "rejected": "Sure, here is how."}))
' > pairs.jsonl

# the two lines a user runs on a cluster
JOB=$(INPUT=pairs.jsonl OUT=labels FEEDBACK=smollm2-135m-instruct sbatch --parsable --array=1-"$SHARDS" "$ROOT/examples/scale/label_shards.sbatch")
MERGE=$(sbatch --parsable --dependency=afterok:"$JOB" --output=logs/merge.out --wrap "caikit merge labels.*-of-$SHARDS.jsonl -o labels.jsonl")
echo "submitted array job $JOB ($SHARDS tasks) and merge job $MERGE"

started=$(date +%s)
while squeue -h -j "$JOB,$MERGE" 2>/dev/null | grep -q .; do sleep 2; done
echo "jobs done in $(( $(date +%s) - started )) s"
cat logs/*.out

python - "$PAIRS" <<'EOF'
import json, sys
records = [json.loads(line) for line in open("labels.jsonl")]
positions = [r["caikit"]["shard"]["position"] for r in records]
assert positions == list(range(int(sys.argv[1]))), f"expected every pair once, in input order: {positions}"
print(f"labels.jsonl: {len(records)} records from {len({r['caikit']['shard']['index'] for r in records})} shards, in input order")
EOF
