#!/usr/bin/env bash
# Sealing what an earlier version stored in the clear survives a kill -9: the last layout before
# encryption (tests/upgrade/schema-13.tar.gz), grown by 300 blobs of 1 MiB written as that version
# wrote them (files under their digest, rows in blobs/repo_blobs), is sealed by
# `berth encryption run`, killed with SIGKILL part way; then a second run finishes the rest, fsck
# is clean, every blob pulls back byte for byte, and no plaintext is left in blobs/.
source "$(dirname "$0")/lib.sh"
need jq "apt-get install jq"
DB=${E2E_DB:-sqlite}
U=$E2E_WORK/sealcrash-$DB; rm -rf "$U"; mkdir -p "$U"
unpack_fixture schema-13 "$U"
trap 'stop_berth; [ -n "${FIXTURE_DB:-}" ] && psql "$BERTH_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $FIXTURE_DB" >/dev/null 2>&1 || true' EXIT

step "grow the old data by 300 blobs of 1 MiB, stored as the old version stored them"
python3 - "$BERTH_DATA" "$DB" "$U/bulk.sql" "$U/bulk.txt" <<'PY'
import hashlib, os, sqlite3, sys, time
data, db, sql_out, list_out = sys.argv[1:5]
now = int(time.time() * 1000)
stmts = ["INSERT INTO repositories (name, created_at) VALUES ('bulk', %d)" % now]
digests = []
for i in range(300):
    body = os.urandom(1 << 20)
    h = hashlib.sha256(body).hexdigest()
    d = os.path.join(data, "blobs", "sha256", h[:2])
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, h), "wb").write(body)
    digests.append("sha256:" + h)
for d in digests:
    stmts.append("INSERT INTO blobs (digest, size, created_at) VALUES ('%s', %d, %d)" % (d, 1 << 20, now))
    stmts.append("INSERT INTO repo_blobs (repo_id, digest, created_at) SELECT id, '%s', %d FROM repositories WHERE name = 'bulk'" % (d, now))
if db == "sqlite":
    c = sqlite3.connect(os.path.join(data, "berth.db"))
    for s in stmts:
        c.execute(s)
    c.commit()
else:
    open(sql_out, "w").write(";\n".join(stmts) + ";\n")
open(list_out, "w").write("\n".join(digests) + "\n")
PY
[ "$DB" = postgres ] && psql "${BERTH_TEST_POSTGRES_URL%/*}/$FIXTURE_DB" -q -v ON_ERROR_STOP=1 -f "$U/bulk.sql" >/dev/null
total=$(( $(wc -l <"$U/bulk.txt") + $(find "$BERTH_DATA/blobs" -type f | wc -l) - 300 ))

step "berth encryption run, killed with SIGKILL part way"
"$BERTH" encryption run --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$U/run1.out" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  [ "$(grep -c '^sealed [0-9]*/' "$U/run1.out" || true)" -ge 60 ] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.05
done
kill -9 $pid 2>/dev/null || fail "the run ended before it could be killed: $(tail -2 "$U/run1.out")"
wait $pid 2>/dev/null || true
done1=$(grep -c '^sealed [0-9]*/' "$U/run1.out" || true)
left=$("$BERTH" encryption status --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" 2>/dev/null | awk '{print $1}')
echo "  killed after sealing $done1 of $total; $left left in the clear"
[ "$done1" -ge 60 ] && [ "$left" -gt 0 ] || fail "not killed part way (sealed $done1, left $left)"

step "a second run finishes; fsck is clean; every blob pulls back; no plaintext left"
"$BERTH" encryption run --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$U/run2.out" 2>&1 || { tail "$U/run2.out"; fail "second run"; }
tail -1 "$U/run2.out" | sed 's/^/  /'
"$BERTH" encryption status --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" 2>/dev/null | grep -q '^0 blob(s)' || fail "blobs left in the clear"
fsck_clean
grep -q "unrecorded" "$E2E_WORK/fsck.out" && fail "fsck found leftovers: $(grep unrecorded "$E2E_WORK/fsck.out" | head -3)"
port=$(free_port); REG=127.0.0.1:$port
"$BERTH" serve --listen "$REG" --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$U/berth.log" 2>&1 &
BERTH_PID=$!
wait_http "http://$REG/v2/"
login_berth
n=0
while read -r d; do
  got=$(rcurl -fsS "http://$REG/v2/bulk/blobs/$d" | sha256sum | cut -d' ' -f1)
  [ "sha256:$got" = "$d" ] || fail "blob $d pulled back as sha256:$got"
  n=$((n + 1))
done <"$U/bulk.txt"
echo "  $n blobs pulled back, each matching its digest"
if [ -n "$(find "$BERTH_DATA/blobs" -type f -name "$(head -1 "$U/bulk.txt" | cut -d: -f2)")" ]; then
  fail "a blob's clear copy is still stored under its digest"
fi
python3 - "$BERTH_DATA/blobs" "$U/bulk.txt" <<'PY' || fail "clear copies left"
import os, sys
names = {l.strip().split(":")[1] for l in open(sys.argv[2]) if l.strip()}
left = [f for _, _, fs in os.walk(sys.argv[1]) for f in fs if f in names]
sys.exit(f"{len(left)} clear copies left" if left else 0)
PY
echo "PASS sealcrash"
