"""T/CEC 102 (电动汽车充换电服务信息交换): the province side of the operators' interconnection.

    exchange.py   envelopes, AES-128-CBC + Base64, HMAC-MD5 signatures, tokens, result codes;
                  pure functions, no I/O (the server and the client share them)
    mapping.py    business payloads -> readings of the platform's contract; pure
    server.py     the FastAPI router operators call (query_token, notification_stationStatus)

Design, confirmed and unconfirmed details of the standard: docs/adr/0015-tcec102.md.
"""
