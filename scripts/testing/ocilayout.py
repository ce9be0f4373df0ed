#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes a plain (gzip) single-platform OCI image layout from layer tars, stdlib only.

usage: ocilayout.py DIR TAG LAYER.tar [LAYER.tar ...] [--level N]
Layers are gzipped with mtime 0 (reproducible); the config lists their diff_ids; index.json names the manifest TAG.
"""
import argparse, gzip, hashlib, json, os, shutil, tempfile

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("tag")
ap.add_argument("layers", nargs="+")
ap.add_argument("--level", type=int, default=6)
args = ap.parse_args()
blobs = os.path.join(args.dir, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)


def put(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest


layers, diff_ids = [], []
for path in args.layers:
    diff = hashlib.sha256()
    with tempfile.TemporaryFile() as out:
        with open(path, "rb") as src, gzip.GzipFile(fileobj=out, mode="wb", compresslevel=args.level, mtime=0) as gz:
            while chunk := src.read(1 << 20):
                diff.update(chunk)
                gz.write(chunk)
        size = out.tell()
        out.seek(0)
        digest = hashlib.sha256()
        with tempfile.NamedTemporaryFile(dir=blobs, delete=False) as tmp:
            while chunk := out.read(1 << 20):
                digest.update(chunk)
                tmp.write(chunk)
        os.replace(tmp.name, os.path.join(blobs, digest.hexdigest()))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                   "digest": "sha256:" + digest.hexdigest(), "size": size})
    diff_ids.append("sha256:" + diff.hexdigest())

config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
    "rootfs": {"type": "layers", "diff_ids": diff_ids},
}, separators=(",", ":")).encode()
manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config), "size": len(config)},
    "layers": layers,
}, separators=(",", ":")).encode()
index = {"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest), "size": len(manifest),
    "annotations": {"org.opencontainers.image.ref.name": args.tag}}]}
with open(os.path.join(args.dir, "index.json"), "w") as f:
    json.dump(index, f)
with open(os.path.join(args.dir, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
print(" ".join(f"{l['digest']} {l['size']}" for l in layers))
