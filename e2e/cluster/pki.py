"""Certificates for one e2e cluster, made fresh by each run with the openssl CLI.

One CA signs everything: the API server's serving certificate (127.0.0.1 and
localhost only) and a client certificate per identity. Keys are P-256: quick
to make and accepted by every component. Nothing here outlives the cluster's
temporary root.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

CURVE = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPKI:
    ca: KeyPair
    apiserver: KeyPair
    apiserver_kubelet_client: KeyPair
    admin: KeyPair
    kubelet: KeyPair
    scheduler: KeyPair
    controller_manager: KeyPair
    service_account_key: Path
    service_account_pub: Path


def _openssl(openssl: Path, *args: str) -> None:
    subprocess.run([str(openssl), *args], check=True, capture_output=True)


def _issue(openssl: Path, folder: Path, ca: KeyPair, name: str, subject: str, extensions: str) -> KeyPair:
    pair = KeyPair(folder / f"{name}.crt", folder / f"{name}.key")
    csr = folder / f"{name}.csr"
    ext = folder / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        openssl, "req", "-new", "-nodes", *CURVE, "-keyout", str(pair.key), "-out", str(csr), "-subj", subject
    )
    _openssl(
        openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-days", "7", "-out", str(pair.cert), "-extfile", str(ext),
    )  # fmt: skip
    return pair


def _client(openssl: Path, folder: Path, ca: KeyPair, name: str, subject: str) -> KeyPair:
    return _issue(
        openssl, folder, ca, name, subject,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )  # fmt: skip


def create(openssl: Path, folder: Path, *, node_name: str) -> ClusterPKI:
    folder.mkdir(parents=True, exist_ok=True)
    ca = KeyPair(folder / "ca.crt", folder / "ca.key")
    _openssl(
        openssl, "req", "-x509", "-new", "-nodes", *CURVE, "-keyout", str(ca.key), "-out", str(ca.cert),
        "-days", "7", "-subj", "/CN=gpu-dp-e2e-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    apiserver = _issue(
        openssl, folder, ca, "apiserver", "/CN=kube-apiserver",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc\n",
    )  # fmt: skip
    sa_key, sa_pub = folder / "sa.key", folder / "sa.pub"
    _openssl(
        openssl, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(sa_key)
    )
    _openssl(openssl, "pkey", "-in", str(sa_key), "-pubout", "-out", str(sa_pub))
    return ClusterPKI(
        ca=ca,
        apiserver=apiserver,
        apiserver_kubelet_client=_client(
            openssl,
            folder,
            ca,
            "apiserver-kubelet-client",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
        ),
        admin=_client(openssl, folder, ca, "admin", "/O=system:masters/CN=kubernetes-admin"),
        kubelet=_client(openssl, folder, ca, "kubelet", f"/O=system:nodes/CN=system:node:{node_name}"),
        scheduler=_client(openssl, folder, ca, "scheduler", "/CN=system:kube-scheduler"),
        controller_manager=_client(
            openssl, folder, ca, "controller-manager", "/CN=system:kube-controller-manager"
        ),
        service_account_key=sa_key,
        service_account_pub=sa_pub,
    )


def kubeconfig(target: Path, *, server: str, ca: Path, client: KeyPair, user: str) -> Path:
    """Write a kubeconfig (JSON is YAML) that uses files, not embedded data."""
    import json

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [
            {"name": user, "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}
        ],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
        "current-context": "e2e",
    }
    target.write_text(json.dumps(config, indent=2))
    return target
