"""End to end: provision over a noisy serial line, then the agent's MQTT link logs in to a
real Mosquitto (TLS, hub CA, generated password file and ACL) and receives its signed document."""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

from pty_noise import NoisyPtyPair
from secure_broker import Probe, start_broker

from edgeship.agent.config import load_config
from edgeship.agent.link.mqtt import Inbound, MqttLink
from edgeship.hub.broker import (
    BrokerUser,
    CertificateAuthority,
    MosquittoSettings,
    TlsListener,
    hash_password,
    write_broker_config,
)
from edgeship.mqtt import device_topic
from edgeship.provisioning import LinkLimits, ProvisioningBundle, install_bundle, receive_bundle, send_bundle
from edgeship.provisioning.serial_port import open_serial
from edgeship.signing import (
    DEPLOYMENT_PAYLOAD_TYPE,
    Signer,
    TrustRoot,
    load_trust_root,
    sign_envelope,
    sign_trust_root,
    verify_envelope,
)

LIMITS = LinkLimits(ack_timeout=0.2, retries=12, confirm_timeout=5.0, linger=1.0, chunk=256)


def test_a_provisioned_device_logs_in_over_tls_and_receives_its_signed_document(
    ptys: NoisyPtyPair, tmp_path: Path
) -> None:
    root, release, hub_key = (Signer.generate(role=r) for r in ("root", "release", "hub"))
    trust = TrustRoot.build(root=[root.public_key], release=[release.public_key], hub=[hub_key.public_key])
    ca = CertificateAuthority.create()
    server = ca.issue_server(["127.0.0.1"])
    (tmp_path / "ca.pem").write_text(ca.cert_pem)
    (tmp_path / "server.crt").write_text(server.cert_pem)
    (tmp_path / "server.key").write_text(server.key_pem)
    users = [BrokerUser("hub", hash_password("hub-pw")), BrokerUser("dev-p", hash_password("dev-p-pw"))]

    def configure(ports: list[int]) -> Path:
        settings = MosquittoSettings(
            port=None,
            tls=TlsListener(ca_file=tmp_path / "ca.pem", cert_file=tmp_path / "server.crt",
                            key_file=tmp_path / "server.key", port=ports[0], bind="127.0.0.1"),
            run_as="root" if os.geteuid() == 0 else None,
        )  # fmt: skip
        return write_broker_config(tmp_path / "broker", users, settings).config

    broker = start_broker(configure, 1)
    port = broker.ports[0]
    try:
        bundle = ProvisioningBundle.build(
            device_id="dev-p", broker_url=f"mqtts://127.0.0.1:{port}", username="dev-p", password="dev-p-pw",
            ca_cert_pem=ca.cert_pem, hub_url="http://127.0.0.1:8000",
            trust_root=sign_trust_root(trust, [root]).to_json(),
        )  # fmt: skip
        device = tmp_path / "device"
        ptys.noise.flip = ptys.noise.drop = 0.001
        with open_serial(ptys.a_path) as operator_end, open_serial(ptys.b_path) as device_end:
            receiver = threading.Thread(
                target=receive_bundle,
                args=(device_end, lambda data: install_bundle(ProvisioningBundle.from_bytes(data),
                                                              device / "agent.toml")),
                kwargs={"wait": 10, "limits": LIMITS}, daemon=True,
            )  # fmt: skip
            receiver.start()
            send_bundle(operator_end, bundle.to_bytes(), limits=LIMITS)
            receiver.join(10)

        config = load_config(device / "agent.toml")
        hub = Probe(f"mqtts://127.0.0.1:{port}", "hub-1", username="hub", password="hub-pw",
                    ca_file=tmp_path / "ca.pem")  # fmt: skip
        assert hub.ok, hub.connected
        hub.subscribe(device_topic("dev-p", "online"))
        document = sign_envelope(b'{"deviceId": "dev-p", "sequence": 1}', DEPLOYMENT_PAYLOAD_TYPE, [hub_key])
        hub.publish(device_topic("dev-p", "desired"), document.to_json().encode(), retain=True)

        inbox: queue.Queue[Inbound] = queue.Queue()
        link = MqttLink(config.broker_settings, config.device_id, inbox)
        link.start()
        try:
            assert link.connected.wait(10)
            inbound = inbox.get(timeout=10)
            assert inbound.kind == "desired"
            provisioned_root = load_trust_root(config.trust_root.read_bytes())
            payload = verify_envelope(inbound.payload, provisioned_root, "hub", DEPLOYMENT_PAYLOAD_TYPE)
            assert payload == b'{"deviceId": "dev-p", "sequence": 1}'
            assert hub.next_message(timeout=5) == (device_topic("dev-p", "online"), b"1")
        finally:
            link.stop()
            hub.close()
    finally:
        broker.stop()
