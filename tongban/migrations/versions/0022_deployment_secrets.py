"""deployment secrets: the fingerprints (Argon2id, salted per deployment) of the secrets every
server must share — SECRET_KEY, TONGBAN_KEK, TONGBAN_AUDIT_KEY, TONGBAN_PAIRWISE_SALT,
TONGBAN_ISSUER — recorded by the first server and compared by every other (/readyz)

Revision ID: 0022_deployment_secrets
Revises: 0021_login_nonce_index
Create Date: 2026-12-07 16:00:00

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "0022_deployment_secrets"
down_revision = "0021_login_nonce_index"
branch_labels = None
depends_on = None
phase = "expand"  # a new table only: servers of the previous release never read it (docs/deploy.md §10)


def upgrade():
    op.create_table(
        "deployment_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("scheme", sa.String(length=64), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("previous_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("previous_until", sa.DateTime(), nullable=True),
        sa.Column("accepted_at", sa.DateTime(), nullable=False),
        sa.Column("accepted_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade():
    op.drop_table("deployment_secrets")
