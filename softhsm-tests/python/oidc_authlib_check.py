"""An OpenID Connect relying party built on authlib (not written here): discovery,
authorization code + PKCE (S256) + nonce, the code exchange with client_secret_basic,
id_token validation against the provider's JWKS, and userinfo.

Usage: oidc_authlib_check.py ISSUER CLIENT_ID CLIENT_SECRET REDIRECT_URI SCOPE
Prints the authorization URL on one line, reads the callback URL (where the browser
was sent) from stdin, then prints one JSON object: the validated id_token claims,
the userinfo answer and the token response's scope. Any failure exits non-zero.
"""

import json
import sys

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, JsonWebToken


def main():
    issuer, client_id, secret, redirect_uri, scope = sys.argv[1:6]
    meta = requests.get(issuer + "/.well-known/openid-configuration", timeout=10).json()
    assert meta["issuer"] == issuer, meta
    client = OAuth2Session(
        client_id,
        secret,
        scope=scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    verifier = generate_token(48)
    nonce = generate_token(20)
    url, state = client.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    print(url, flush=True)
    callback = sys.stdin.readline().strip()
    token = client.fetch_token(
        meta["token_endpoint"],
        authorization_response=callback,
        state=state,
        code_verifier=verifier,
    )
    keys = JsonWebKey.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
    claims = JsonWebToken(["ES256"]).decode(
        token["id_token"],
        keys,
        claims_options={
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": client_id},
            "nonce": {"essential": True, "value": nonce},
            "sub": {"essential": True},
            "exp": {"essential": True},
        },
    )
    claims.validate(leeway=5)
    userinfo = client.get(meta["userinfo_endpoint"]).json()
    print(json.dumps({"claims": dict(claims), "userinfo": userinfo, "scope": token.get("scope")}), flush=True)


if __name__ == "__main__":
    main()
