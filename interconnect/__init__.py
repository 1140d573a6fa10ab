"""Platform-to-platform interconnection: other platforms exchange data with ours.

Unlike ``collectors/`` (edge agents reading devices), the parts here run on the platform side,
next to the API. ``tcec102`` speaks T/CEC 102, the charging operators' interconnection standard
(docs/adr/0015-tcec102.md).
"""
