"""phone checks: SMS codes for a phone that has no account yet (registration)

Revision ID: 0015_citizen
Revises: 0014_fixdoc
Create Date: 2026-12-07 08:05:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0015_citizen"
down_revision = "0014_fixdoc"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('phone_checks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('salt', sa.String(length=32), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_phone_checks'))
    )
    op.create_index(op.f('ix_phone_checks_phone'), 'phone_checks', ['phone'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_phone_checks_phone'), table_name='phone_checks')
    op.drop_table('phone_checks')
