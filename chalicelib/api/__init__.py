"""The REST API's HTTP side: request and response schemas, parsing, presenting
domain objects, and the OpenAPI document. `app.py`'s routes use these; the
service layer never does (it takes plain values and returns domain objects).
"""
