"""dockyard.certs (the CA for TLS) and the mqtts:// side of dockyard.mqtt."""
from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509

from dockyard import certs
from dockyard.mqtt import check_ca, parse_url


def test_a_server_certificate_is_signed_by_the_ca_and_names_its_hosts():
    ca_pem, ca_key = certs.ca()
    cert_pem, _key = certs.server_cert(ca_pem, ca_key, ["broker.example", "10.0.0.5"])
    ca, cert = x509.load_pem_x509_certificate(ca_pem), x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    other, _ = certs.ca("another")
    with pytest.raises(ValueError):
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(other))


def test_mqtts_urls_mean_tls_on_8883():
    assert parse_url("mqtts://b.example").port == 8883 and parse_url("mqtts://b.example").tls
    assert not parse_url("mqtt://b.example").tls and parse_url("mqtt://b.example").port == 1883
    with pytest.raises(ValueError, match="mqtts://"):
        check_ca("mqtt://b.example", "/etc/hostname")
    with pytest.raises(ValueError, match="no such file"):
        check_ca("mqtts://b.example", "/nonexistent/ca.crt")
