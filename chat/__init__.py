"""Chat: WebSocket rooms with gap-free per-room sequence numbers, history in SQL, presence,
typing and receipts, fanned out across instances through Redis pub/sub."""
