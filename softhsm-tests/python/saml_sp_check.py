#!/usr/bin/env python3
"""A pysaml2 service provider configured from Symbolon's IdP metadata.

Usage: saml_sp_check.py IDP_METADATA GOOD_RESPONSE TAMPERED_RESPONSE WORKDIR
           [--sp-entity E --acs URL --idp-entity E --request-id ID
            --expect-name-id N --expect NAME=VALUE ... | --expect-status CODE]

Accepts GOOD_RESPONSE (prints "ACCEPTED <name id>" and the attributes) and must
reject TAMPERED_RESPONSE (prints "REJECTED tampered"). Exit status 0 only if both
behave. Signatures are checked by pysaml2 with the xmlsec1 binary. Without the
options, the SP, IdP and expected attributes are those of tests/it/saml.rs; with
--expect, exactly the given attribute values are checked instead. With
--expect-status, GOOD_RESPONSE is a signed refusal (no assertion) that pysaml2 must
read as that second-level status, and TAMPERED_RESPONSE must fail its signature.
"""
import argparse
import base64
import sys

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig

SP_ENTITY = "https://sp.example/saml2/metadata"
ACS = "https://sp.example/saml2/acs"


def client(idp_metadata, sp_entity=SP_ENTITY, acs=ACS):
    conf = {
        "entityid": sp_entity,
        "metadata": {"local": [idp_metadata]},
        "service": {
            "sp": {
                "endpoints": {
                    "assertion_consumer_service": [(acs, BINDING_HTTP_POST)],
                    "single_logout_service": [
                        ("https://sp.example/saml2/slo", BINDING_HTTP_REDIRECT)
                    ],
                },
                "want_assertions_signed": True,
                "want_response_signed": False,
                "allow_unsolicited": False,
                "name_id_format": "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
            }
        },
        "accepted_time_diff": 120,
        "allow_unknown_attributes": True,
        "xmlsec_binary": "/usr/bin/xmlsec1",
    }
    cfg = SPConfig()
    cfg.load(conf)
    return Saml2Client(config=cfg)


def parse(sp, path, request_id="_req123"):
    with open(path, "rb") as f:
        xml = f.read()
    return sp.parse_authn_request_response(
        base64.b64encode(xml).decode(), BINDING_HTTP_POST, {request_id: "/"}
    )


def check_refusal(sp, args):
    """GOOD must raise pysaml2's exception for its status (after its signature was
    checked); TAMPERED must fail before its status is read."""
    from saml2.response import STATUSCODE2EXCEPTION, StatusError

    want = STATUSCODE2EXCEPTION[args.expect_status]
    try:
        parse(sp, args.good, args.request_id)
        print("the refusal was accepted as a sign-in")
        return 1
    except want as e:
        print("REFUSED", type(e).__name__, e)
    try:
        parse(sp, args.bad, args.request_id)
    except StatusError as e:
        print("the tampered refusal was read:", type(e).__name__, e)
        return 1
    except Exception as e:  # the signature check fails first
        print("REJECTED tampered:", type(e).__name__, e)
        return 0
    print("the tampered refusal was accepted")
    return 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("idp_md")
    ap.add_argument("good")
    ap.add_argument("bad")
    ap.add_argument("workdir")
    ap.add_argument("--sp-entity", default=SP_ENTITY)
    ap.add_argument("--acs", default=ACS)
    ap.add_argument("--idp-entity", default="https://idp.example/saml/metadata")
    ap.add_argument("--request-id", default="_req123")
    ap.add_argument("--expect-name-id")
    ap.add_argument("--expect", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument(
        "--expect-status",
        metavar="SECOND_LEVEL_CODE",
        help="GOOD is a signed refusal with this second-level status; TAMPERED must fail its signature",
    )
    args = ap.parse_args()
    sp = client(args.idp_md, args.sp_entity, args.acs)
    if args.expect_status:
        return check_refusal(sp, args)
    resp = parse(sp, args.good, args.request_id)
    if resp is None:
        print("good response not accepted")
        return 1
    name_id = resp.assertion.subject.name_id
    print("ACCEPTED", name_id.text, name_id.format)
    print("ATTRIBUTES", resp.ava)
    assert resp.assertion.issuer.text == args.idp_entity, resp.assertion.issuer.text
    ava = resp.ava
    if args.expect_name_id is not None:
        assert name_id.text == args.expect_name_id, name_id.text
    if args.expect:
        for item in args.expect:
            name, value = item.split("=", 1)
            assert ava.get(name) == [value], (name, ava)
    else:
        assert ava.get("givenName") == ['Zoë "Jo" <x> & y'], ava
        assert ava.get("family_name") == ["Mc\tDonald\r\nthe 2nd"], ava
        assert ava.get("age_over_18") == ["true"], ava
        assert ava.get("nationality") == ["D"], ava
    try:
        bad_resp = parse(sp, args.bad, args.request_id)
    except Exception as e:  # signature failure raises
        print("REJECTED tampered:", type(e).__name__, e)
        return 0
    if bad_resp is None:
        print("REJECTED tampered: None")
        return 0
    print("tampered response was ACCEPTED")
    return 1


if __name__ == "__main__":
    sys.exit(main())
