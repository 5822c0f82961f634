#!/usr/bin/env python3
"""A pysaml2 service provider answers an IdP-initiated LogoutRequest.

Usage: saml_sp_logout.py IDP_METADATA SP_ENTITY SP_SLO SP_KEY SP_CERT REQUEST_URL NAME_ID

REQUEST_URL is where Symbolon sent the browser (the SP's SLO URL with SAMLRequest,
RelayState, SigAlg and Signature). pysaml2 checks the query signature against the
IdP metadata's certificate (RSA-SHA256: pysaml2 has no ECDSA for the redirect
binding), parses the LogoutRequest, checks it names NAME_ID, and builds its
LogoutResponse (Success) on the HTTP-Redirect binding, signed RSA-SHA256 with
SP_KEY. Prints "VERIFIED <NameID> <SessionIndex>" and then "LOCATION <url>" (the
redirect back to the IdP's SingleLogoutService). A bad signature exits non-zero.
"""
import sys
import urllib.parse

from saml2 import BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.xmldsig import SIG_RSA_SHA256


def main():
    idp_md, sp_entity, sp_slo, key, cert, url, name_id = sys.argv[1:8]
    conf = {
        "entityid": sp_entity,
        "metadata": {"local": [idp_md]},
        "key_file": key,
        "cert_file": cert,
        "service": {
            "sp": {
                "endpoints": {
                    "assertion_consumer_service": [(sp_entity + "/acs", "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST")],
                    "single_logout_service": [(sp_slo, BINDING_HTTP_REDIRECT)],
                },
                "want_assertions_signed": True,
            }
        },
        "accepted_time_diff": 120,
        "xmlsec_binary": "/usr/bin/xmlsec1",
    }
    cfg = SPConfig()
    cfg.load(conf)
    # pysaml2 checks the redirect-binding signature of any received request only when
    # its "idp" setting want_authn_requests_signed is on (entity._parse_request), so an
    # SP that insists on signed LogoutRequests sets it.
    cfg.setattr("idp", "want_authn_requests_signed", True)
    sp = Saml2Client(config=cfg)
    q = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlparse(url).query).items()}
    try:
        req = sp.parse_logout_request(
            q["SAMLRequest"],
            BINDING_HTTP_REDIRECT,
            relay_state=q.get("RelayState"),
            sigalg=q.get("SigAlg"),
            signature=q.get("Signature"),
        )
    except Exception as e:  # pysaml2 raises on a bad signature
        print("REJECTED", type(e).__name__, e, flush=True)
        return 1
    if req is None:
        print("REJECTED", flush=True)
        return 1
    msg = req.message
    if msg.name_id.text != name_id:
        print("WRONG NAMEID", msg.name_id.text, flush=True)
        return 1
    print("VERIFIED", msg.name_id.text, msg.session_index[0].text, flush=True)
    resp = sp.create_logout_response(msg, [BINDING_HTTP_REDIRECT])
    idp = msg.issuer.text
    dest = sp.metadata.single_logout_service(idp, BINDING_HTTP_REDIRECT, "idpsso")[0]["location"]
    http = sp.apply_binding(
        BINDING_HTTP_REDIRECT,
        resp,
        dest,
        relay_state=q.get("RelayState", ""),
        response=True,
        sign=True,
        sigalg=SIG_RSA_SHA256,
    )
    location = dict(http["headers"])["Location"]
    print("LOCATION", location, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
