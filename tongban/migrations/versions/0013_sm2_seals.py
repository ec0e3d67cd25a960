"""国密 seals: the CA that signed each certificate (ca_certificates.issuer) and the GB/T 38540
seal data of SM2 seals (seals.eseal)

Revision ID: 0013_sm2_seals
Revises: 0012_ratings
Create Date: 2026-12-07 07:20:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0013_sm2_seals"
down_revision = "0012_ratings"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('ca_certificates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('issuer', sa.String(length=20), server_default='issuing', nullable=False))
    with op.batch_alter_table('seals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('eseal', sa.LargeBinary(), nullable=True))


def downgrade():
    with op.batch_alter_table('seals', schema=None) as batch_op:
        batch_op.drop_column('eseal')
    with op.batch_alter_table('ca_certificates', schema=None) as batch_op:
        batch_op.drop_column('issuer')
