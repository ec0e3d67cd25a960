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


def upgrade():
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.create_index("ix_authorization_codes_client_id_nonce", ["client_id", "nonce"], unique=False)


def downgrade():
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.drop_index("ix_authorization_codes_client_id_nonce")
