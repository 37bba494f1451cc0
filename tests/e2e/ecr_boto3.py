"""boto3 against Berth's ECR API: every supported operation, its pagination and its errors.

Leaves repository `boto/app` holding an image put with PutImage (tag `put`) whose layer is
busybox, for the shell test to pull and run with docker. Credentials and region come from the
environment (AWS_SHARED_CREDENTIALS_FILE, AWS_DEFAULT_REGION); the endpoint from ECR_URL.
"""
import base64, gzip, hashlib, io, json, os, sys, tarfile, time, urllib.request

import boto3
import botocore.exceptions

ecr = boto3.client("ecr", endpoint_url=os.environ["ECR_URL"])
ACCOUNT = "000000000000"
checks = 0


def check(cond, msg):
    global checks
    checks += 1
    if not cond:
        print("FAIL:", msg)
        sys.exit(1)


def error_of(fn, **kw):
    try:
        fn(**kw)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    return None


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


# ---- repositories ----
r = ecr.create_repository(
    repositoryName="boto/app",
    imageScanningConfiguration={"scanOnPush": True},
    encryptionConfiguration={"encryptionType": "AES256"},
    imageTagMutability="MUTABLE",
    tags=[{"Key": "team", "Value": "platform"}],
)["repository"]
check(r["repositoryArn"] == f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/boto/app", r)
check(hasattr(r["createdAt"], "year"), "createdAt parses as a timestamp")
check(error_of(ecr.create_repository, repositoryName="boto/app") == "RepositoryAlreadyExistsException", "dup")
for i in range(5):
    ecr.create_repository(repositoryName=f"boto/page-{i}")
names = []
for page in ecr.get_paginator("describe_repositories").paginate(PaginationConfig={"PageSize": 2}):
    names += [x["repositoryName"] for x in page["repositories"]]
check([n for n in names if n.startswith("boto/page-")] == [f"boto/page-{i}" for i in range(5)], names)
check(error_of(ecr.describe_repositories, repositoryNames=["boto/none"]) == "RepositoryNotFoundException", "nf")
r = ecr.put_image_tag_mutability(
    repositoryName="boto/page-0",
    imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
    imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "latest*"}],
)
check(r["imageTagMutabilityExclusionFilters"][0]["filter"] == "latest*", r)
r = ecr.put_image_scanning_configuration(repositoryName="boto/page-1", imageScanningConfiguration={"scanOnPush": True})
check(r["imageScanningConfiguration"]["scanOnPush"] is True, r)
arn = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/boto/app"
ecr.tag_resource(resourceArn=arn, tags=[{"Key": "env", "Value": "test"}])
ecr.untag_resource(resourceArn=arn, tagKeys=["team"])
check(ecr.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "env", "Value": "test"}], "tags")
check(error_of(ecr.tag_resource, resourceArn=arn, tags=[{"Key": "aws:x", "Value": "y"}]) == "InvalidTagParameterException", "aws: tag")

# ---- creation templates ----
t = ecr.create_repository_creation_template(
    prefix="boto-tpl", appliedFor=["CREATE_ON_PUSH"], imageTagMutability="IMMUTABLE",
    resourceTags=[{"Key": "from", "Value": "template"}], description="boto",
)["repositoryCreationTemplate"]
check(t["prefix"] == "boto-tpl" and t["imageTagMutability"] == "IMMUTABLE", t)
check(error_of(ecr.create_repository_creation_template, prefix="boto-tpl", appliedFor=["CREATE_ON_PUSH"])
      == "TemplateAlreadyExistsException", "dup template")
t = ecr.update_repository_creation_template(prefix="boto-tpl", description="updated")["repositoryCreationTemplate"]
check(t["description"] == "updated" and t["imageTagMutability"] == "IMMUTABLE", t)
prefixes = [x["prefix"] for x in ecr.describe_repository_creation_templates()["repositoryCreationTemplates"]]
check("ROOT" in prefixes and "boto-tpl" in prefixes, prefixes)
check(error_of(ecr.delete_repository_creation_template, prefix="nope") == "TemplateNotFoundException", "tpl nf")

# ---- layers: a busybox layer in parts, and a config ----
# busybox plus 6 MiB of noise, so the gzipped layer needs two parts (ECR: every part but the
# last at least 5 MiB).
data = open("/bin/busybox", "rb").read()
info = tarfile.TarInfo("bin/busybox"); info.size, info.mode = len(data), 0o755
link = tarfile.TarInfo("bin/sh"); link.type, link.linkname = tarfile.SYMTYPE, "busybox"
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as tar:
    tar.addfile(info, io.BytesIO(data))
    tar.addfile(link)
    pad = tarfile.TarInfo("data/random.bin"); noise = os.urandom(6 * 1024 * 1024); pad.size = len(noise)
    tar.addfile(pad, io.BytesIO(noise))
raw_tar = buf.getvalue()
layer = gzip.compress(raw_tar, mtime=0)
layer_digest = sha(layer)

up = ecr.initiate_layer_upload(repositoryName="boto/app")
uid = up["uploadId"]
part = 5 * 1024 * 1024
r = ecr.upload_layer_part(repositoryName="boto/app", uploadId=uid, partFirstByte=0, partLastByte=part - 1,
                          layerPartBlob=layer[:part])
check(r["lastByteReceived"] == part - 1, r)
code = error_of(ecr.upload_layer_part, repositoryName="boto/app", uploadId=uid, partFirstByte=part + 1,
                partLastByte=len(layer) - 1, layerPartBlob=layer[part + 1:])
check(code == "InvalidLayerPartException", code)
ecr.upload_layer_part(repositoryName="boto/app", uploadId=uid, partFirstByte=part, partLastByte=len(layer) - 1,
                      layerPartBlob=layer[part:])
r = ecr.complete_layer_upload(repositoryName="boto/app", uploadId=uid, layerDigests=[layer_digest])
check(r["layerDigest"] == layer_digest, r)

config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Cmd": ["/bin/busybox", "echo", "hello from PutImage"]},
    "rootfs": {"type": "layers", "diff_ids": [sha(raw_tar)]},
}).encode()
uid = ecr.initiate_layer_upload(repositoryName="boto/app")["uploadId"]
ecr.upload_layer_part(repositoryName="boto/app", uploadId=uid, partFirstByte=0, partLastByte=len(config) - 1,
                      layerPartBlob=config)
config_digest = ecr.complete_layer_upload(repositoryName="boto/app", uploadId=uid, layerDigests=[sha(config)])["layerDigest"]
uid = ecr.initiate_layer_upload(repositoryName="boto/app")["uploadId"]
ecr.upload_layer_part(repositoryName="boto/app", uploadId=uid, partFirstByte=0, partLastByte=len(config) - 1,
                      layerPartBlob=config)
code = error_of(ecr.complete_layer_upload, repositoryName="boto/app", uploadId=uid, layerDigests=[sha(config)])
check(code == "LayerAlreadyExistsException", code)

r = ecr.batch_check_layer_availability(repositoryName="boto/app", layerDigests=[layer_digest, sha(b"none")])
check([l["layerAvailability"] for l in r["layers"]] == ["AVAILABLE", "UNAVAILABLE"], r)
check(r["layers"][0]["layerSize"] == len(layer), r)
url = ecr.get_download_url_for_layer(repositoryName="boto/app", layerDigest=layer_digest)["downloadUrl"]
check(urllib.request.urlopen(url).read() == layer, "download URL content")
check(error_of(ecr.get_download_url_for_layer, repositoryName="boto/app", layerDigest=sha(b"none")) == "LayersNotFoundException", "no layer")

# ---- images ----
manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest, "size": len(config)},
    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer_digest, "size": len(layer)}],
})
img = ecr.put_image(repositoryName="boto/app", imageManifest=manifest, imageTag="put")["image"]
digest = img["imageId"]["imageDigest"]
check(digest == sha(manifest.encode()), img)
check(error_of(ecr.put_image, repositoryName="boto/app", imageManifest=manifest, imageTag="put") == "ImageAlreadyExistsException", "again")
check(error_of(ecr.put_image, repositoryName="boto/app", imageManifest=manifest, imageDigest=sha(b"x")) == "ImageDigestDoesNotMatchException", "digest")
ecr.put_image(repositoryName="boto/app", imageManifest=manifest, imageTag="second")
# boto/app scans on push: an image put with PutImage is scanned like one pushed over /v2/.
ecr.get_waiter("image_scan_complete").wait(repositoryName="boto/app", imageId={"imageTag": "put"},
                                           WaiterConfig={"Delay": 1, "MaxAttempts": 60})
f = ecr.describe_image_scan_findings(repositoryName="boto/app", imageId={"imageTag": "put"})
check(f["imageScanStatus"]["status"] == "COMPLETE", f["imageScanStatus"])

ids = ecr.list_images(repositoryName="boto/app", filter={"tagStatus": "TAGGED"})["imageIds"]
check(sorted(i["imageTag"] for i in ids) == ["put", "second"], ids)
d = ecr.describe_images(repositoryName="boto/app", imageIds=[{"imageTag": "put"}])["imageDetails"][0]
check(d["imageSizeInBytes"] == len(layer) + len(config), d)
check(sorted(d["imageTags"]) == ["put", "second"], d)
check(d["imageManifestMediaType"] == "application/vnd.docker.distribution.manifest.v2+json", d)
check(hasattr(d["imagePushedAt"], "year"), d)
got = ecr.batch_get_image(repositoryName="boto/app", imageIds=[{"imageTag": "put"}, {"imageTag": "missing"}])
check(got["images"][0]["imageManifest"] == manifest, "manifest bytes")
check(got["failures"][0]["failureCode"] == "ImageNotFound", got["failures"])
for _ in range(200):   # pull times are recorded in batches
    d = ecr.describe_images(repositoryName="boto/app", imageIds=[{"imageTag": "put"}])["imageDetails"][0]
    if "lastRecordedPullTime" in d:
        break
    time.sleep(0.1)
check("lastRecordedPullTime" in d, "BatchGetImage records the pull")
sig = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "artifactType": "application/x-boto-sig",
    "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config_digest, "size": len(config)},
    "layers": [],
    "subject": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": digest, "size": len(manifest)},
})
ecr.put_image(repositoryName="boto/app", imageManifest=sig)
refs = ecr.list_image_referrers(repositoryName="boto/app", subjectId={"imageDigest": digest})["referrers"]
check(len(refs) == 1 and refs[0]["artifactType"] == "application/x-boto-sig", refs)
r = ecr.batch_delete_image(repositoryName="boto/app", imageIds=[{"imageTag": "second"}, {"imageTag": "ghost"}])
check(r["imageIds"] == [{"imageDigest": digest, "imageTag": "second"}], r)
check(r["failures"][0]["failureCode"] == "ImageNotFound", r)

# ---- auth and registry ----
auth = ecr.get_authorization_token()["authorizationData"][0]
user, _, password = base64.b64decode(auth["authorizationToken"]).decode().partition(":")
check(user == "AWS" and len(password) > 20, "authorization token")
check(auth["proxyEndpoint"] == os.environ["ECR_URL"], auth)
check(ecr.describe_registry()["registryId"] == ACCOUNT, "registry id")
check(ecr.get_account_setting(name="BLOB_MOUNTING")["value"] == "ENABLED", "blob mounting default")
ecr.put_account_setting(name="BLOB_MOUNTING", value="DISABLED")
check(ecr.get_account_setting(name="BLOB_MOUNTING")["value"] == "DISABLED", "blob mounting off")
ecr.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")

# ---- deletion ----
check(error_of(ecr.delete_repository, repositoryName="boto/page-0") is None, "empty repo deletes")
check(error_of(ecr.delete_repository, repositoryName="boto/app") == "RepositoryNotEmptyException", "not empty")
bad = boto3.client("ecr", endpoint_url=os.environ["ECR_URL"], aws_access_key_id="AKIANOTAREALKEY00000",
                   aws_secret_access_key="x" * 40)
check(error_of(bad.describe_registry) == "UnrecognizedClientException", "unknown key refused")
wrong_region = boto3.client("ecr", endpoint_url=os.environ["ECR_URL"], region_name="eu-west-3")
check(error_of(wrong_region.describe_registry) == "InvalidSignatureException", "wrong region refused")
ecr.delete_repository_creation_template(prefix="boto-tpl")
print(f"boto3: {checks} checks passed")
