"""scan-to-log-in (qr_logins) and the device authorization grant (device_authorizations)

Revision ID: 0007_qr_device
Revises: 0006_enterprise
Create Date: 2026-11-23 13:10:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0007_qr_device"
down_revision = "0006_enterprise"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('qr_logins',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('binding_hash', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=False),
    sa.Column('user_agent', sa.String(length=300), nullable=False),
    sa.Column('scanned_at', sa.DateTime(), nullable=True),
    sa.Column('confirmed_at', sa.DateTime(), nullable=True),
    sa.Column('consumed_at', sa.DateTime(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('phone_sid', sa.String(length=64), nullable=True),
    sa.Column('acr', sa.String(length=10), nullable=True),
    sa.Column('new_sid', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_qr_logins_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_qr_logins')),
    sa.UniqueConstraint('binding_hash', name=op.f('uq_qr_logins_binding_hash')),
    sa.UniqueConstraint('code_hash', name=op.f('uq_qr_logins_code_hash'))
    )
    op.create_index(op.f('ix_qr_logins_expires_at'), 'qr_logins', ['expires_at'], unique=False)
    op.create_table('device_authorizations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_code_hash', sa.String(length=64), nullable=False),
    sa.Column('user_code_hash', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('poll_interval', sa.Integer(), nullable=False),
    sa.Column('last_polled_at', sa.DateTime(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('sid', sa.String(length=64), nullable=True),
    sa.Column('auth_time', sa.BigInteger(), nullable=True),
    sa.Column('acr', sa.String(length=10), nullable=True),
    sa.Column('amr', sa.String(length=100), nullable=True),
    sa.Column('decided_at', sa.DateTime(), nullable=True),
    sa.Column('consumed_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_device_authorizations_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_authorizations')),
    sa.UniqueConstraint('device_code_hash', name=op.f('uq_device_authorizations_device_code_hash')),
    sa.UniqueConstraint('user_code_hash', name=op.f('uq_device_authorizations_user_code_hash'))
    )
    op.create_index(op.f('ix_device_authorizations_client_id'), 'device_authorizations', ['client_id'], unique=False)
    op.create_index(op.f('ix_device_authorizations_expires_at'), 'device_authorizations', ['expires_at'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_device_authorizations_expires_at'), table_name='device_authorizations')
    op.drop_index(op.f('ix_device_authorizations_client_id'), table_name='device_authorizations')
    op.drop_table('device_authorizations')
    op.drop_index(op.f('ix_qr_logins_expires_at'), table_name='qr_logins')
    op.drop_table('qr_logins')
