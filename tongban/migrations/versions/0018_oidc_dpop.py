"""modern OIDC profile: DPoP, resource indicators, pairwise subjects, CORS origins

Revision ID: 0018_oidc_dpop
Revises: 0017_oidc_grants
Create Date: 2026-12-07 10:10:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0018_oidc_dpop"
down_revision = "0017_oidc_grants"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("require_dpop", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("subject_type", sa.String(length=10), nullable=False, server_default="public"))
        batch.add_column(sa.Column("sector_identifier_uri", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("sector", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("web_origins", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("allowed_resources", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("authorization_codes") as batch:
        batch.add_column(sa.Column("resources", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("dpop_jkt", sa.String(length=64), nullable=True))
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.add_column(sa.Column("resources", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("dpop_jkt", sa.String(length=64), nullable=True))
    op.create_table(
        "resources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uri", sa.String(length=500), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("department", sa.String(length=200), nullable=False),
        sa.Column("scope", sa.String(length=100), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resources")),
        sa.UniqueConstraint("uri", name=op.f("uq_resources_uri")),
    )
    op.create_table(
        "dpop_proofs",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_dpop_proofs")),
    )
    op.create_index(op.f("ix_dpop_proofs_expires_at"), "dpop_proofs", ["expires_at"], unique=False)


def downgrade():
    op.drop_index(op.f("ix_dpop_proofs_expires_at"), table_name="dpop_proofs")
    op.drop_table("dpop_proofs")
    op.drop_table("resources")
    for table in ("refresh_tokens", "authorization_codes"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("dpop_jkt")
            batch.drop_column("resources")
    with op.batch_alter_table("clients") as batch:
        for col in ("allowed_resources", "web_origins", "sector", "sector_identifier_uri", "subject_type",
                    "require_dpop"):
            batch.drop_column(col)
