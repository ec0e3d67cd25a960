"""log-in path: an index on authorization_codes (client_id, nonce) — every authorization
request with a nonce checks it was never used by that client (OpenID Connect replay check),
which scanned every code of the client

Revision ID: 0021_login_nonce_index
Revises: 0020_legacy
Create Date: 2026-12-07 13:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = "0021_login_nonce_index"
down_revision = "0020_legacy"
branch_labels = None
depends_on = None
phase = "expand"  # an index only, built without blocking writers (docs/deploy.md §10)


def upgrade():
    # PostgreSQL: CREATE INDEX CONCURRENTLY, outside the migration's transaction, so servers
    # still running keep issuing codes while it builds; SQLite ignores the flag
    with op.get_context().autocommit_block():
        op.create_index("ix_authorization_codes_client_id_nonce", "authorization_codes", ["client_id", "nonce"],
                        unique=False, postgresql_concurrently=True)


def downgrade():
    with op.get_context().autocommit_block():
        op.drop_index("ix_authorization_codes_client_id_nonce", table_name="authorization_codes",
                      postgresql_concurrently=True)
