"""Small servers the service is measured against, each in its own process.

- `bare`: uvicorn + Starlette broadcasting frames from memory, no database.
- `listen_per_client`: every stream holds its own LISTEN connection.
- `polling`: every stream polls the table once a second through a pool.
"""
