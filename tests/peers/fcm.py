"""A local FCM HTTP v1 peer: OAuth2 JWT-bearer token endpoint + `messages:send`, real wire format.

The token endpoint verifies the assertion's RS256 signature with the service account's public
key, its audience, issuer and scope, and issues opaque bearer tokens; `messages:send` checks the
bearer token and answers like FCM (including the UNREGISTERED error shape).
"""

from __future__ import annotations

import itertools
import json
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.peers.http_server import HttpPeer, Recorded, Reply

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


def make_key() -> tuple[str, str]:
    """A fresh RSA key: (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


class FcmPeer(HttpPeer):
    """`with FcmPeer(public_pem, email) as fcm:` → fcm.url, fcm.messages, fcm.dead_tokens."""

    def __init__(self, public_pem: str, client_email: str, expires_in: int = 3600) -> None:
        super().__init__(self._respond)
        self.public_pem = public_pem
        self.client_email = client_email
        self.expires_in = expires_in
        self.issued: set[str] = set()
        self.messages: list[dict[str, object]] = []
        self.dead_tokens: set[str] = set()
        self.token_requests = 0
        self._ids = itertools.count(1)

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def _respond(self, req: Recorded) -> Reply:
        if req.path == "/token":
            return self._token(req)
        if req.path.endswith("/messages:send"):
            return self._send(req)
        return _json(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": req.path}})

    def _token(self, req: Recorded) -> Reply:
        self.token_requests += 1
        form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return _json(400, {"error": "unsupported_grant_type"})
        try:
            claims = jwt.decode(
                form.get("assertion", ""), self.public_pem, algorithms=["RS256"],
                audience=self.token_uri, issuer=self.client_email,
                options={"require": ["exp", "iat", "iss", "aud"]}, leeway=300,
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            return _json(400, {"error": "invalid_grant", "error_description": str(exc)})
        if claims.get("scope") != SCOPE:
            return _json(400, {"error": "invalid_scope"})
        token = f"ya29.local-{next(self._ids)}"
        self.issued.add(token)
        return _json(
            200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        )

    def _send(self, req: Recorded) -> Reply:
        token = req.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.issued:
            return _json(401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}})
        message = json.loads(req.body)["message"]
        if message.get("token") in self.dead_tokens:
            return _json(404, {"error": {
                "code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
                "details": [{
                    "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                    "errorCode": "UNREGISTERED",
                }],
            }})  # fmt: skip
        self.messages.append(message)
        project = req.path.split("/")[3]
        return _json(200, {"name": f"projects/{project}/messages/0:{next(self._ids)}"})


def _json(status: int, body: object) -> Reply:
    return Reply(status, {"Content-Type": "application/json"}, json.dumps(body).encode())
