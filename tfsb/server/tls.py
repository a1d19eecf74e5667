"""`--ssl_config_file`: gRPC server credentials, checked at start-up before any model loads.

gRPC itself reports a bad key or certificate only as `Failed to BuildAndStart gRPC server`, and only when the
port is added (after every model has loaded); an expired certificate it accepts silently, and then every
client fails its handshake. So the PEM texts are parsed here first, and each problem names its field."""

from __future__ import annotations

import datetime as dt
import logging

from tfsb.server.config import SSLConfig, parse_text_file
from tfsb.errors import InvalidArgumentError
from tfsb.server.flags import ServerOptions

log = logging.getLogger("tfsb.server")


def server_credentials(opts: ServerOptions):
    """server.cc BuildServerCredentials: --ssl_config_file holds the PEM texts themselves (not paths);
    `client_verify` requires and verifies a client certificate (mutual TLS) against `custom_ca`. Both the TCP
    port and the UNIX socket use them, as in TF Serving. None: plaintext."""
    if not opts.ssl_config_file:
        return None
    import grpc

    where = opts.ssl_config_file
    cfg = parse_text_file(where, SSLConfig)
    if not cfg.server_key or not cfg.server_cert:
        raise InvalidArgumentError(f"{where}: SSLConfig needs server_key and server_cert (PEM text, not file names)")
    if cfg.client_verify and not cfg.custom_ca:
        raise InvalidArgumentError(f"{where}: client_verify needs custom_ca, the PEM of the CA that signs client "
                                   "certificates")
    for field_name in ("server_key", "server_cert", "custom_ca"):
        value = getattr(cfg, field_name)
        if value and "-----BEGIN " not in value:
            raise InvalidArgumentError(f"{where}: {field_name} is not PEM text (it must hold the PEM itself, e.g. "
                                       "server_key: \"-----BEGIN PRIVATE KEY-----\\n...\")")
    check_pem(where, cfg)
    log.info("Using SSL credentials%s", " (client certificates required)" if cfg.client_verify else "")
    return grpc.ssl_server_credentials([(cfg.server_key.encode(), cfg.server_cert.encode())],
                                       root_certificates=cfg.custom_ca.encode() or None,
                                       require_client_auth=cfg.client_verify)


def check_pem(where: str, cfg: SSLConfig, now: dt.datetime | None = None) -> None:
    """Parse the key and certificates; refuse what cannot work (unparsable PEM, a key that is not the
    certificate's); log an error for a certificate outside its validity period (TF Serving starts with it,
    and so does this server, but no client will complete a handshake)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        key = serialization.load_pem_private_key(cfg.server_key.encode(), password=None)
    except TypeError:
        raise InvalidArgumentError(f"{where}: server_key is encrypted; gRPC needs an unencrypted private key") \
            from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise InvalidArgumentError(f"{where}: server_key is not a parsable PEM private key ({_first_line(e)})") \
            from None
    chain = _certificates(where, "server_cert", cfg.server_cert)
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(der, spki) != chain[0].public_key().public_bytes(der, spki):
        raise InvalidArgumentError(f"{where}: server_key does not match server_cert (the certificate for "
                                   f"{chain[0].subject.rfc4514_string()} was issued for another key)")
    cas = _certificates(where, "custom_ca", cfg.custom_ca) if cfg.custom_ca else []
    for field_name, cert in [("server_cert", chain[0]), *(("custom_ca", c) for c in cas)]:
        subject = cert.subject.rfc4514_string()
        if now > cert.not_valid_after_utc:
            log.error("!!! %s: %s (%s) EXPIRED on %s: every TLS client will refuse this server until it is "
                      "replaced !!!", where, field_name, subject, cert.not_valid_after_utc.isoformat())
        elif now < cert.not_valid_before_utc:
            log.error("!!! %s: %s (%s) is NOT VALID YET (from %s): every TLS client will refuse this server until "
                      "then !!!", where, field_name, subject, cert.not_valid_before_utc.isoformat())
        elif cert.not_valid_after_utc - now < dt.timedelta(days=7):
            log.warning("%s: %s (%s) expires on %s", where, field_name, subject,
                        cert.not_valid_after_utc.isoformat())


def _certificates(where: str, field_name: str, pem: str) -> list:
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as e:
        raise InvalidArgumentError(f"{where}: {field_name} is not a parsable PEM certificate ({_first_line(e)})") \
            from None
    return certs


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
