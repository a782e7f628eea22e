"""Start the joint services with uvicorn (the CLI's ``centre serve --protocol joint`` and
``manager serve``); each hosts protocol 4.2 and protocol 4.5 (:mod:`~.hosts`)."""

from __future__ import annotations

import logging
from pathlib import Path

from cipherseg.nodes import wire
from cipherseg.nodes.http_app import create_app
from cipherseg.transport.tokens import Authenticator


def _run(app: object, host: str, port: int, ssl_certfile: Path | None,
         ssl_keyfile: Path | None) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(app, host=host, port=port,  # type: ignore[arg-type]
                ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
                ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
                log_level="warning", timeout_keep_alive=30)


def serve_joint_centre(*, host: str, port: int, nodes: Authenticator,
                       contact_timeout: float = 60.0,
                       max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
                       ssl_certfile: Path | None = None, ssl_keyfile: Path | None = None
                       ) -> None:
    from cipherseg.nodes.centre_service import JointCentreHost
    from cipherseg.nodes.hosts import Hosts
    from cipherseg.nodes.vertical_centre import VerticalCentreHost

    hosts = Hosts([JointCentreHost(contact_timeout=contact_timeout),
                   VerticalCentreHost(contact_timeout=contact_timeout)])
    app = create_app(hosts, nodes, max_message_bytes=max_message_bytes)
    _run(app, host, port, ssl_certfile, ssl_keyfile)


def serve_manager(*, host: str, port: int, nodes: Authenticator, centre_url: str,
                  centre_token: str, contact_timeout: float = 60.0,
                  join_timeout: float = 900.0, centre_ca: str | None = None,
                  insecure_http: bool = False,
                  max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
                  ssl_certfile: Path | None = None, ssl_keyfile: Path | None = None) -> None:
    from cipherseg.nodes.client import ServiceClient
    from cipherseg.nodes.hosts import Hosts
    from cipherseg.nodes.manager_service import JointManagerHost
    from cipherseg.nodes.vertical_manager import VerticalManagerHost

    centre = ServiceClient(centre_url, token=centre_token, what="centre",
                           verify=centre_ca or True, insecure_http=insecure_http)
    hosts = Hosts([JointManagerHost(centre, contact_timeout=contact_timeout,
                                    join_timeout=join_timeout),
                   VerticalManagerHost(centre, contact_timeout=contact_timeout,
                                       join_timeout=join_timeout)])
    _run(create_app(hosts, nodes, max_message_bytes=max_message_bytes), host, port,
         ssl_certfile, ssl_keyfile)
