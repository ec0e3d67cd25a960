"""per (account, address) log-in throttling (login_throttles)

Revision ID: 0010_session_security
Revises: 0009_claim_proofing
Create Date: 2026-12-07 07:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0010_session_security"
down_revision = "0009_claim_proofing"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('login_throttles',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('pending', sa.Integer(), nullable=False),
    sa.Column('pending_at', sa.DateTime(), nullable=True),
    sa.Column('locked_until', sa.DateTime(), nullable=True),
    sa.Column('locks', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_login_throttles_user_id_users'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'source', name=op.f('pk_login_throttles'))
    )


def downgrade():
    op.drop_table('login_throttles')
