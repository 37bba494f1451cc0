#!/usr/bin/env bash
# HTTPS served by Berth itself (--tls-cert/--tls-key): docker with the CA in certs.d, skopeo
# with --cert-dir and the aws CLI with --ca-bundle push, pull and call over TLS; HTTP/2 is
# offered; aws:SecureTransport is true; the certificate is reloaded on SIGHUP while a download
# in flight carries on.
source "$(dirname "$0")/lib.sh"
need openssl "apt-get install openssl"
need aws "pip install awscli"
need skopeo "apt-get install skopeo"
start_dockerd

T=$E2E_WORK/tls; rm -rf "$T"; mkdir -p "$T/certs"
cert() { # NAME: a server certificate for 127.0.0.1 signed by the test CA
  openssl req -newkey rsa:2048 -nodes -keyout "$T/$1.key" -subj "/CN=berth $1" -out "$T/$1.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$T/ext"
  openssl x509 -req -in "$T/$1.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 2 \
    -extfile "$T/ext" -out "$T/$1.crt" 2>/dev/null
  cat "$T/$1.crt" "$T/ca.pem" >"$T/$1.chain.pem"   # a chain: leaf, then the CA
}
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/ca.key" -subj "/CN=Berth test CA" -days 2 -out "$T/ca.pem" 2>/dev/null
cert first; cert second
cp "$T/first.chain.pem" "$T/certs/server.pem"; cp "$T/first.key" "$T/certs/server.key"; chmod 600 "$T/certs/server.key"

port=$(free_port)
REG=127.0.0.1:$port
BERTH_DATA=$T/data
"$BERTH" serve --listen "$REG" --data-dir "$BERTH_DATA" --tls-cert "$T/certs/server.pem" --tls-key "$T/certs/server.key" \
  >"$E2E_WORK/tls.log" 2>&1 &
BERTH_PID=$!
trap stop_berth EXIT
for _ in $(seq 1 100); do curl -s --cacert "$T/ca.pem" -o /dev/null "https://$REG/v2/" && break; sleep 0.1; done
grep -q "listening on    https://$REG" "$E2E_WORK/tls.log" || fail "the banner does not say https: $(cat "$E2E_WORK/tls.log")"
grep -q "public URL https://$REG" "$E2E_WORK/tls.log" || fail "public_url does not default to https"
export AWS_SHARED_CREDENTIALS_FILE=$BERTH_DATA/root-credentials AWS_DEFAULT_REGION=us-east-1
export DOCKER_CONFIG=$E2E_WORK/docker-config REGISTRY_AUTH_FILE=$E2E_WORK/containers-auth.json
E=(--endpoint-url "https://$REG" --ca-bundle "$T/ca.pem")

step "plain HTTP to the TLS port is refused; HTTPS answers, over HTTP/2 when offered"
curl -s -o /dev/null "http://$REG/v2/" && fail "plain HTTP was answered on the TLS port"
v=$(curl -s --cacert "$T/ca.pem" -o /dev/null -w '%{http_version}' --http2 "https://$REG/v2/")
[ "$v" = 2 ] || fail "HTTP/2 was not negotiated (got $v)"
v=$(curl -s --cacert "$T/ca.pem" -o /dev/null -w '%{http_version}' --http1.1 "https://$REG/v2/")
[ "$v" = 1.1 ] || fail "HTTP/1.1 over TLS does not work (got $v)"
curl -sI --cacert "$T/ca.pem" "https://$REG/v2/" | grep -qi "www-authenticate: Bearer realm=\"https://$REG/token\"" \
  || fail "the token realm is not https"

step "aws CLI over TLS (--ca-bundle)"
aws ecr create-repository --repository-name tls/app "${E[@]}" >/dev/null || fail "create-repository over TLS"
aws ecr describe-repositories "${E[@]}" --query 'repositories[].repositoryName' --output text | grep -q tls/app \
  || fail "describe-repositories over TLS"

step "aws:SecureTransport is true over TLS"
aws iam create-user --user-name secure-only "${E[@]}" >/dev/null
aws iam put-user-policy --user-name secure-only --policy-name tls "${E[@]}" --policy-document \
  '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecr:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"true"}}}]}'
aws iam create-access-key --user-name secure-only "${E[@]}" --output json >"$T/key.json"
AWS_ACCESS_KEY_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["AccessKey"]["AccessKeyId"])' "$T/key.json") \
AWS_SECRET_ACCESS_KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["AccessKey"]["SecretAccessKey"])' "$T/key.json") \
AWS_SHARED_CREDENTIALS_FILE=/dev/null aws ecr describe-repositories "${E[@]}" >/dev/null \
  || fail "a policy that needs aws:SecureTransport refused a TLS request"

step "docker over TLS with the CA in certs.d"
mkdir -p "/etc/docker/certs.d/$REG"; cp "$T/ca.pem" "/etc/docker/certs.d/$REG/ca.crt"
trap 'stop_berth; rm -rf "/etc/docker/certs.d/$REG"' EXIT
aws ecr get-login-password "${E[@]}" | docker login --username AWS --password-stdin "$REG" >/dev/null \
  || fail "docker login over TLS"
B=$T/image; mkdir -p "$B/rootfs/bin"; cp /bin/busybox "$B/rootfs/bin/busybox"
head -c 2000000 /dev/urandom >"$B/rootfs/payload"
tar -C "$B/rootfs" -c . | docker import -c 'CMD ["/bin/busybox","echo","hello over tls"]' - "$REG/tls/app:1" >/dev/null
docker push "$REG/tls/app:1" >/dev/null || fail "docker push over TLS"
docker rmi "$REG/tls/app:1" >/dev/null
docker pull "$REG/tls/app:1" >/dev/null || fail "docker pull over TLS"
[ "$(docker run --rm --network none "$REG/tls/app:1")" = "hello over tls" ] || fail "the pulled image does not run"

step "skopeo over TLS (--cert-dir with the CA)"
mkdir -p "$T/skopeo-certs"; cp "$T/ca.pem" "$T/skopeo-certs/ca.crt"
aws ecr get-login-password "${E[@]}" | skopeo login --cert-dir "$T/skopeo-certs" -u AWS --password-stdin "$REG" >/dev/null \
  || fail "skopeo login over TLS"
skopeo copy -q --src-cert-dir "$T/skopeo-certs" --dest-cert-dir "$T/skopeo-certs" \
  "docker://$REG/tls/app:1" "docker://$REG/tls/copy:1" || fail "skopeo copy over TLS"
skopeo inspect --cert-dir "$T/skopeo-certs" "docker://$REG/tls/copy:1" >/dev/null || fail "skopeo inspect over TLS"

step "SIGHUP reloads the certificate without dropping a download in flight"
serial() { openssl s_client -connect "$REG" -CAfile "$T/ca.pem" </dev/null 2>/dev/null | openssl x509 -noout -serial; }
before=$(serial)
[ "$before" = "$(openssl x509 -in "$T/first.crt" -noout -serial)" ] || fail "not serving the first certificate"
big=$(head -c 64000000 /dev/urandom | tee "$T/big" | sha256sum | cut -d' ' -f1)
pw=$(aws ecr get-login-password "${E[@]}")
curl -sf --cacert "$T/ca.pem" -u "AWS:$pw" -X POST --data-binary "@$T/big" "https://$REG/v2/tls/app/blobs/uploads/?digest=sha256:$big" \
  || fail "uploading the big blob"
curl -sf --cacert "$T/ca.pem" -u "AWS:$pw" --limit-rate 20M -o "$T/big.out" "https://$REG/v2/tls/app/blobs/sha256:$big" &
dl=$!
sleep 1
cp "$T/second.chain.pem" "$T/certs/server.pem"; cp "$T/second.key" "$T/certs/server.key"
kill -HUP "$BERTH_PID"
sleep 0.5
after=$(serial)
[ "$after" = "$(openssl x509 -in "$T/second.crt" -noout -serial)" ] || fail "the new certificate is not served after SIGHUP ($after)"
wait $dl || fail "the download in flight broke at the reload"
[ "$(sha256sum <"$T/big.out" | cut -d' ' -f1)" = "$big" ] || fail "the download in flight was corrupted"
grep -q "reloaded the TLS certificate" "$E2E_WORK/tls.log" || fail "the reload was not logged"
# A broken pair keeps the old one in use.
echo broken >"$T/certs/server.pem"; kill -HUP "$BERTH_PID"; sleep 0.5
[ "$(serial)" = "$after" ] || fail "a broken certificate file replaced the working one"
grep -q "could not reload the TLS certificate" "$E2E_WORK/tls.log" || fail "the failed reload was not logged"
curl -sf --cacert "$T/ca.pem" -o /dev/null -u "AWS:$pw" "https://$REG/v2/" || fail "the server stopped answering"
echo "PASS tls"
