"""modern OIDC profile: client keys, PAR, signed request objects, FAPI 2.0 profile, one-time jtis

Revision ID: 0019_oidc_par
Revises: 0018_oidc_dpop
Create Date: 2026-12-07 10:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0019_oidc_par"
down_revision = "0018_oidc_dpop"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("jwks", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("jwks_uri", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("require_par", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("require_signed_request_object", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("profile", sa.String(length=20), nullable=False, server_default=""))
    op.create_table("pushed_authorization_requests",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("uri_hash", sa.String(length=64), nullable=False),
    sa.Column("client_id", sa.String(length=64), nullable=False),
    sa.Column("params", sa.JSON(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("expires_at", sa.DateTime(), nullable=False),
    sa.Column("browser_hash", sa.String(length=64), nullable=True),
    sa.Column("used_at", sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_pushed_authorization_requests")),
    sa.UniqueConstraint("uri_hash", name=op.f("uq_pushed_authorization_requests_uri_hash")),
    )
    op.create_index(op.f("ix_pushed_authorization_requests_client_id"), "pushed_authorization_requests",
                    ["client_id"], unique=False)
    op.create_index(op.f("ix_pushed_authorization_requests_expires_at"), "pushed_authorization_requests",
                    ["expires_at"], unique=False)
    op.create_table("used_assertions",
    sa.Column("key", sa.String(length=64), nullable=False),
    sa.Column("expires_at", sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint("key", name=op.f("pk_used_assertions")),
    )
    op.create_index(op.f("ix_used_assertions_expires_at"), "used_assertions", ["expires_at"], unique=False)


def downgrade():
    op.drop_index(op.f("ix_used_assertions_expires_at"), table_name="used_assertions")
    op.drop_table("used_assertions")
    op.drop_index(op.f("ix_pushed_authorization_requests_expires_at"), table_name="pushed_authorization_requests")
    op.drop_index(op.f("ix_pushed_authorization_requests_client_id"), table_name="pushed_authorization_requests")
    op.drop_table("pushed_authorization_requests")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("profile")
        batch.drop_column("require_signed_request_object")
        batch.drop_column("require_par")
        batch.drop_column("jwks_uri")
        batch.drop_column("jwks")
