"""The OFDs of licences Tongban sealed and handed out (licence_ofds): an OFD verifies as a
licence only when its SHA-256 is one of these

Revision ID: 0014_fixdoc
Revises: 0013_sm2_seals
Create Date: 2026-12-07 08:10:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0014_fixdoc"
down_revision = "0013_sm2_seals"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'licence_ofds',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('licence_id', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('copy', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['licence_id'], ['licences.id'], name=op.f('fk_licence_ofds_licence_id_licences'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_licence_ofds')),
        sa.UniqueConstraint('sha256', name=op.f('uq_licence_ofds_sha256')),
    )
    with op.batch_alter_table('licence_ofds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_licence_ofds_licence_id'), ['licence_id'], unique=False)


def downgrade():
    with op.batch_alter_table('licence_ofds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_licence_ofds_licence_id'))
    op.drop_table('licence_ofds')
