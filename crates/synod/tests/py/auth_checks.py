"""python-etcd3 (unchanged) against a Synod cluster with auth on: it authenticates with a
user and password, puts and gets where its role allows, is refused elsewhere with etcd's
message, and a wrong password is refused. Driven by crates/synod/tests/auth.rs.

One line is not stock usage: python-etcd3 sends its token twice, as plain `token` metadata
and as gRPC call credentials, and grpcio refuses call credentials on a plaintext channel
("Established channel does not have a sufficient security level"). Over plaintext the script
drops the call credentials and the library's own metadata carries the token; over TLS the
client needs no change."""

import argparse
import sys

import etcd3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    args = p.parse_args()
    host, port = args.endpoint.rsplit(":", 1)

    c = etcd3.client(host=host, port=int(port), user="reader", password="readerpw")
    assert c.metadata and c.metadata[0][0] == "token", "python-etcd3 authenticated"
    c.call_credentials = None  # plaintext channel: see the module doc
    c.put("py/k", "v")
    value, _ = c.get("py/k")
    assert value == b"v", value
    print("PASS put-get")

    try:
        c.get("secret")
    except Exception as e:  # python-etcd3 re-raises grpc's PERMISSION_DENIED as is
        assert "permission denied" in str(e), e
    else:
        sys.exit("reading a key outside the role was not refused")
    print("PASS refused-elsewhere")

    try:
        etcd3.client(host=host, port=int(port), user="reader", password="wrong")
    except Exception as e:
        assert "authentication failed" in str(e), e
    else:
        sys.exit("a wrong password was accepted")
    print("PASS bad-password")


if __name__ == "__main__":
    main()
