"""The T/CEC 102 exchange layer against independent code and published vectors.

Expected values are computed here with ``cryptography`` and ``hmac`` directly, never with the
module under test; the two published vectors (docs/adr/0015-tcec102.md, "Conformance
vectors") are fixed strings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from interconnect.tcec102 import exchange as x
from interconnect.tcec102 import mapping
from qilu.errors import ConfigError

K16 = "1234567890abcdef"
PUBLISHED = x.KeySet(K16, K16, K16, K16)
# Part 4's own example (a crypto fixture: its plaintext is not valid JSON)
PART4_DATA = (
    "il7B0BSEjFdzpyKzfOFpvg/Se1CP802RItKYFPfSLRxJ3jf0bVl9hvYOEktPAYW2nd7S8MBcyHYyacHKbISq5iTm"
    "DzG+ivnR+SZJv3USNTYVMz9rCQVSxd0cLlqsJauko79NnwQJbzDTyLooYoIwz75qBOH2/xOMirpeEqRJrF/EQjWe"
    "kJmGk9RtboXePu2rka+Xm51syBPhiXJAq0GfbfaFu9tNqs/e2Vjja/ltE1M0lqvxfXQ6da6HrThsm5id4ClZFIi0"
    "acRfrsPLRixS/IQYtksxghvJwbqOsbIsITail9Ayy4tKcogeEZiOO+4Ed264NSKmk7l3wKwJLAFjCFogBx8GE3OB"
    "z4pqcAn/ydA="
)
PART4_SIG = "745166E8C43C84D37FFEC0F529C4136F"
TOKEN_DATA = (
    "mYvffpNoFf4E/ZTC1tOw41TC5OlkEobfAYCm5N8hEusaLUaUIqOrXtdbMrSck0DSmfM7mRuOGMoCQzH0nWPGuw=="
)
TOKEN_SIG = "D2D584A14F3F284445DF85D0E8C0697C"

OURS = x.KeySet("op-secret-00001", "A1b2C3d4E5f6G7h8", "0011223344556677", "sig-key-xyz")


def ref_encrypt(plain: bytes, key: str, iv: str) -> str:
    p = padding.PKCS7(128).padder()
    padded = p.update(plain) + p.finalize()
    e = Cipher(algorithms.AES(key.encode()), modes.CBC(iv.encode())).encryptor()
    return base64.b64encode(e.update(padded) + e.finalize()).decode()


def ref_decrypt(data: str, key: str, iv: str) -> bytes:
    d = Cipher(algorithms.AES(key.encode()), modes.CBC(iv.encode())).decryptor()
    padded = d.update(base64.b64decode(data)) + d.finalize()
    u = padding.PKCS7(128).unpadder()
    return u.update(padded) + u.finalize()


def ref_sig(key: str, *parts: str) -> str:
    return hmac.new(key.encode(), "".join(parts).encode(), hashlib.md5).hexdigest().upper()


# ------------------------------------------------------------------------------ published vectors


def test_part4_example_signature() -> None:
    assert x.sign(K16, "123456789", PART4_DATA, "20160729142400", "0001") == PART4_SIG


def test_part4_example_decrypts_with_key_equal_iv() -> None:
    plain = x.decrypt_data(PART4_DATA, PUBLISHED)
    assert plain == ref_decrypt(PART4_DATA, K16, K16)
    assert b'"stationID":"111111111111111"' in plain


def test_published_query_token_request_opens() -> None:
    env = x.Envelope("123456789", TOKEN_DATA, "20180120165755", "0001", TOKEN_SIG)
    at = datetime(2018, 1, 20, 16, 57, 55, tzinfo=x.CST)
    payload = x.open_request(env, PUBLISHED, at + timedelta(seconds=30), timedelta(minutes=5))
    assert payload == {"OperatorID": "123456789", "OperatorSecret": K16}


def test_published_request_refused_with_one_character_changed() -> None:
    env = x.Envelope("123456789", TOKEN_DATA, "20180120165756", "0001", TOKEN_SIG)
    at = datetime(2018, 1, 20, 16, 57, 55, tzinfo=x.CST)
    with pytest.raises(x.ExchangeError) as err:
        x.open_request(env, PUBLISHED, at, timedelta(minutes=5))
    assert err.value.ret == x.Ret.SIGNATURE


# ------------------------------------------------------------------------------ fixed vectors


def test_encryption_matches_independent_aes_cbc_pkcs7() -> None:
    for n in (0, 1, 15, 16, 17, 100):
        plain = ("充" * n).encode()
        ours = x.encrypt_data(plain, OURS)
        assert ours == ref_encrypt(plain, OURS.data_secret, OURS.data_secret_iv)
        assert x.decrypt_data(ref_encrypt(plain, "A1b2C3d4E5f6G7h8", "0011223344556677"), OURS) == (
            plain
        )


def test_sealed_request_is_what_independent_code_computes() -> None:
    at = datetime(2026, 12, 6, 6, 0, 0, tzinfo=UTC)  # 14:00:00 in China
    payload = {"ConnectorStatusInfo": {"ConnectorID": "C1", "Status": 3}}
    env = x.seal_request("MA0000001", payload, OURS, at, seq=7)
    plain = json.dumps(payload, separators=(",", ":")).encode()
    data = ref_encrypt(plain, OURS.data_secret, OURS.data_secret_iv)
    assert env.as_json() == {
        "OperatorID": "MA0000001",
        "Data": data,
        "TimeStamp": "20261206140000",
        "Seq": "0007",
        "Sig": ref_sig(OURS.sig_secret, "MA0000001", data, "20261206140000", "0007"),
    }


def test_sealed_response_signs_ret_msg_data() -> None:
    out = x.seal_response(x.Ret.OK, OURS, {"Status": 0})
    data = ref_encrypt(b'{"Status":0}', OURS.data_secret, OURS.data_secret_iv)
    assert out == {"Ret": 0, "Msg": "", "Data": data, "Sig": ref_sig(OURS.sig_secret, "0", data)}
    assert x.open_response(json.dumps(out).encode(), OURS).payload == {"Status": 0}


def test_response_ret_as_string_and_tampered_sig() -> None:
    data = ref_encrypt(b'{"Total":0}', OURS.data_secret, OURS.data_secret_iv)
    body = {"Ret": "0", "Msg": "", "Data": data, "Sig": ref_sig(OURS.sig_secret, "0", data)}
    assert x.open_response(json.dumps(body).encode(), OURS).payload == {"Total": 0}
    body["Sig"] = ref_sig("other", "0", data)
    with pytest.raises(x.ExchangeError, match="bad_signature"):
        x.open_response(json.dumps(body).encode(), OURS)
    with pytest.raises(x.ExchangeError, match="malformed_response"):
        x.open_response(b"<html>gateway timeout</html>", OURS)


def test_timestamps_in_china_time_and_epoch_ms() -> None:
    assert x.parse_timestamp("20261206140000") == datetime(2026, 12, 6, 6, tzinfo=UTC)
    assert x.parse_timestamp("1796536800000") == datetime(2026, 12, 6, 6, tzinfo=UTC)
    for bad in ("2026-12-06 14:00", "20261399140000", "abc"):
        with pytest.raises(x.ExchangeError) as err:
            x.parse_timestamp(bad)
        assert err.value.ret == x.Ret.POST_PARAMETERS


# ------------------------------------------------------------------------------ bad input


def _env(**change: str) -> bytes:
    at = datetime(2026, 12, 6, 6, tzinfo=UTC)
    obj = x.seal_request("MA0000001", {"a": 1}, OURS, at).as_json()
    obj.update(change)
    return json.dumps(obj).encode()


NOW = datetime(2026, 12, 6, 6, 1, tzinfo=UTC)
TOL = timedelta(minutes=5)


@pytest.mark.parametrize(
    ("body", "ret", "reason"),
    [
        (b"not json", x.Ret.POST_PARAMETERS, "malformed_request"),
        (b"[1]", x.Ret.POST_PARAMETERS, "malformed_request"),
        (b'{"OperatorID": "MA0000001"}', x.Ret.POST_PARAMETERS, "malformed_request"),
        (_env(OperatorID="short"), x.Ret.POST_PARAMETERS, "malformed_request"),
        (_env(Seq="00001"), x.Ret.POST_PARAMETERS, "malformed_request"),
        (_env(Sig="nothex"), x.Ret.SIGNATURE, "bad_signature"),
    ],
)
def test_envelope_shape_refusals(body: bytes, ret: x.Ret, reason: str) -> None:
    with pytest.raises(x.ExchangeError) as err:
        x.read_envelope(body)
    assert (err.value.ret, err.value.reason) == (ret, reason)


def test_wrong_signature_is_refused_before_decrypting() -> None:
    env = x.read_envelope(_env(Data="garbage!!", Sig="0" * 32))
    with pytest.raises(x.ExchangeError) as err:
        x.open_request(env, OURS, NOW, TOL)
    assert (err.value.ret, err.value.reason) == (x.Ret.SIGNATURE, "bad_signature")


def _signed(data: str, ts: str = "20261206140000", seq: str = "0001") -> x.Envelope:
    return x.Envelope(
        "MA0000001", data, ts, seq, ref_sig(OURS.sig_secret, "MA0000001", data, ts, seq)
    )


def test_undecryptable_data() -> None:
    for data in (
        "not base64 ***",
        base64.b64encode(b"short").decode(),
        ref_encrypt(b"x", "B" * 16, "C" * 16),
    ):
        with pytest.raises(x.ExchangeError) as err:
            x.open_request(_signed(data), OURS, NOW, TOL)
        assert (err.value.ret, err.value.reason) == (x.Ret.POST_PARAMETERS, "undecryptable_data")


def test_malformed_json_inside_a_valid_envelope() -> None:
    for plain in (b'{"a": 1,}', b"[1, 2]", b"\xff\xfe"):
        data = ref_encrypt(plain, OURS.data_secret, OURS.data_secret_iv)
        with pytest.raises(x.ExchangeError) as err:
            x.open_request(_signed(data), OURS, NOW, TOL)
        assert (err.value.ret, err.value.reason) == (x.Ret.BUSINESS_PARAMETERS, "malformed_data")


def test_timestamp_outside_tolerance_but_repeated_seq_is_fine() -> None:
    data = ref_encrypt(b"{}", OURS.data_secret, OURS.data_secret_iv)
    assert x.open_request(_signed(data, seq="0001"), OURS, NOW, TOL) == {}
    assert x.open_request(_signed(data, seq="0001"), OURS, NOW, TOL) == {}  # constant Seq
    for ts in ("20261206134000", "20261206142000"):  # 20 min early, 20 min late
        with pytest.raises(x.ExchangeError) as err:
            x.open_request(_signed(data, ts=ts), OURS, NOW, TOL)
        assert (err.value.ret, err.value.reason) == (x.Ret.POST_PARAMETERS, "stale_timestamp")


def test_key_sets_refuse_wrong_lengths() -> None:
    with pytest.raises(ConfigError, match="data_secret"):
        x.KeySet("s", "short", K16, "sig")
    with pytest.raises(ConfigError, match="sig_secret"):
        x.KeySet("s", K16, K16, "")


# ------------------------------------------------------------------------------ tokens


def test_tokens_bind_operator_key_number_and_expiry() -> None:
    key = b"k" * 32
    now = datetime(2026, 12, 6, 6, tzinfo=UTC)
    text, tok = x.issue_token(key, "MA0000001", 3, now, timedelta(seconds=7200))
    assert tok.expires_at == now + timedelta(seconds=7200)
    assert x.check_token(key, f"Bearer {text}", "MA0000001", 3, now).operator_id == "MA0000001"
    cases = [
        (None, "MA0000001", 3, now, "missing_token"),
        (f"Bearer {text}", "MB0000002", 3, now, "foreign_token"),
        (f"Bearer {text}", "MA0000001", 4, now, "rotated_token"),
        (f"Bearer {text}", "MA0000001", 3, now + timedelta(hours=3), "expired_token"),
        (f"Bearer {text[:-2]}xx", "MA0000001", 3, now, "bad_token"),
        ("Bearer abc", "MA0000001", 3, now, "bad_token"),
    ]
    for header, op, no, at, reason in cases:
        with pytest.raises(x.ExchangeError) as err:
            x.check_token(key, header, op, no, at)
        assert (err.value.ret, err.value.reason) == (x.Ret.TOKEN, reason)
    with pytest.raises(x.ExchangeError, match="bad_token"):
        x.check_token(b"other" * 8, f"Bearer {text}", "MA0000001", 3, now)


# ------------------------------------------------------------------------------ mapping


def test_status_notification_to_readings() -> None:
    cs = mapping.status_notification({"ConnectorStatusInfo": {"ConnectorID": 12, "Status": 255}})
    assert cs == mapping.ConnectorStatus("12", 255)
    rs = mapping.status_readings("tcec102.MA0000001.E1", cs.status, 5)
    assert [(r.metric, r.value) for r in rs] == [("connector_status", 8.0), ("fault", 1.0)]
    bads: list[dict[str, object]] = [
        {},
        {"ConnectorStatusInfo": {"ConnectorID": "1", "Status": 9}},
        {"ConnectorStatusInfo": {"Status": 1}},
        {"ConnectorStatusInfo": []},
    ]
    for bad in bads:
        with pytest.raises(x.ExchangeError) as err:
            mapping.status_notification(bad)
        assert err.value.ret == x.Ret.BUSINESS_PARAMETERS
