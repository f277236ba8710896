"""Suggestions: advice on the account from an LLM (or offline rules), never orders.

``job.SuggestionService`` runs the ``suggestion`` job: it reads the account over MCP
(read tools only) and the recent ``pe:signals``, asks an ``llm.LLMProvider`` and keeps the
validated answer (``schema.SuggestionSet``) in the ``suggestions`` table. See
docs/strategies.md, "Suggestions".
"""
