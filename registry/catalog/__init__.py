"""The catalogue: ORM models, engine set-up, schema migrations and queries."""
