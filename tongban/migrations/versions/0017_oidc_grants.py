"""token exchange (RFC 8693) targets per client; CIBA (poll mode) requests

Revision ID: 0017_oidc_grants
Revises: 0016_upstreams
Create Date: 2026-12-07 10:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0017_oidc_grants"
down_revision = "0016_upstreams"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('clients') as batch_op:
        batch_op.add_column(sa.Column('exchange_targets', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('backchannel_token_delivery_mode', sa.String(length=10), nullable=True))
    op.create_table('ciba_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('auth_req_id_hash', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('acr_values', sa.String(length=100), nullable=True),
    sa.Column('binding_message', sa.String(length=200), nullable=True),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('poll_interval', sa.Integer(), nullable=False),
    sa.Column('last_polled_at', sa.DateTime(), nullable=True),
    sa.Column('sid', sa.String(length=64), nullable=True),
    sa.Column('auth_time', sa.BigInteger(), nullable=True),
    sa.Column('acr', sa.String(length=10), nullable=True),
    sa.Column('amr', sa.String(length=100), nullable=True),
    sa.Column('decided_at', sa.DateTime(), nullable=True),
    sa.Column('consumed_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_ciba_requests_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ciba_requests')),
    sa.UniqueConstraint('auth_req_id_hash', name=op.f('uq_ciba_requests_auth_req_id_hash'))
    )
    op.create_index(op.f('ix_ciba_requests_client_id'), 'ciba_requests', ['client_id'], unique=False)
    op.create_index(op.f('ix_ciba_requests_user_id'), 'ciba_requests', ['user_id'], unique=False)
    op.create_index(op.f('ix_ciba_requests_expires_at'), 'ciba_requests', ['expires_at'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_ciba_requests_expires_at'), table_name='ciba_requests')
    op.drop_index(op.f('ix_ciba_requests_user_id'), table_name='ciba_requests')
    op.drop_index(op.f('ix_ciba_requests_client_id'), table_name='ciba_requests')
    op.drop_table('ciba_requests')
    with op.batch_alter_table('clients') as batch_op:
        batch_op.drop_column('backchannel_token_delivery_mode')
        batch_op.drop_column('exchange_targets')
