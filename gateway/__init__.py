"""The gateway: the chat/QA service that answers questions from federated silo retrieval."""

__all__: list[str] = []
