"""CAS 3.0 and SAML 2.0: legacy services in the register, CAS tickets and logins, SAML keys,
pairwise NameIDs, pending AuthnRequests and the SPs each session signed in to

Revision ID: 0020_legacy
Revises: 0019_oidc_par
Create Date: 2026-12-07 10:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0020_legacy"
down_revision = "0019_oidc_par"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('legacy_services',
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('protocol', sa.String(length=10), nullable=False),
    sa.Column('service_urls', sa.JSON(), nullable=False),
    sa.Column('proxy_allowed', sa.Boolean(), nullable=False),
    sa.Column('entity_id', sa.String(length=500), nullable=True),
    sa.Column('metadata_xml', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('client_id', name=op.f('pk_legacy_services')),
    sa.UniqueConstraint('entity_id', name=op.f('uq_legacy_services_entity_id'))
    )
    op.create_table('cas_tickets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ticket_hash', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('service', sa.Text(), nullable=False),
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('from_new_login', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_cas_tickets_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cas_tickets')),
    sa.UniqueConstraint('ticket_hash', name=op.f('uq_cas_tickets_ticket_hash'))
    )
    op.create_index(op.f('ix_cas_tickets_client_id'), 'cas_tickets', ['client_id'], unique=False)
    op.create_index(op.f('ix_cas_tickets_sid'), 'cas_tickets', ['sid'], unique=False)
    op.create_index(op.f('ix_cas_tickets_expires_at'), 'cas_tickets', ['expires_at'], unique=False)
    op.create_table('cas_logins',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('service', sa.Text(), nullable=False),
    sa.Column('session_index', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cas_logins')),
    sa.UniqueConstraint('sid', 'client_id', 'session_index', name=op.f('uq_cas_logins_sid'))
    )
    op.create_index(op.f('ix_cas_logins_sid'), 'cas_logins', ['sid'], unique=False)
    op.create_table('saml_keys',
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('activates_at', sa.DateTime(), nullable=False),
    sa.Column('cert_pem', sa.Text(), nullable=False),
    sa.Column('private_key', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('kid', name=op.f('pk_saml_keys'))
    )
    op.create_table('saml_name_ids',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('name_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_saml_name_ids_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_saml_name_ids')),
    sa.UniqueConstraint('user_id', 'client_id', name=op.f('uq_saml_name_ids_user_id')),
    sa.UniqueConstraint('client_id', 'name_id', name=op.f('uq_saml_name_ids_client_id'))
    )
    op.create_table('saml_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.String(length=200), nullable=False),
    sa.Column('acs_url', sa.Text(), nullable=False),
    sa.Column('relay_state', sa.Text(), nullable=True),
    sa.Column('force_authn', sa.Boolean(), nullable=False),
    sa.Column('is_passive', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('answered_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_saml_requests')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_saml_requests_key_hash')),
    sa.UniqueConstraint('client_id', 'request_id', name=op.f('uq_saml_requests_client_id'))
    )
    op.create_index(op.f('ix_saml_requests_expires_at'), 'saml_requests', ['expires_at'], unique=False)
    op.create_table('saml_logins',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('name_id', sa.String(length=64), nullable=False),
    sa.Column('session_index', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_saml_logins'))
    )
    op.create_index(op.f('ix_saml_logins_sid'), 'saml_logins', ['sid'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_saml_logins_sid'), table_name='saml_logins')
    op.drop_table('saml_logins')
    op.drop_index(op.f('ix_saml_requests_expires_at'), table_name='saml_requests')
    op.drop_table('saml_requests')
    op.drop_table('saml_name_ids')
    op.drop_table('saml_keys')
    op.drop_index(op.f('ix_cas_logins_sid'), table_name='cas_logins')
    op.drop_table('cas_logins')
    op.drop_index(op.f('ix_cas_tickets_expires_at'), table_name='cas_tickets')
    op.drop_index(op.f('ix_cas_tickets_sid'), table_name='cas_tickets')
    op.drop_index(op.f('ix_cas_tickets_client_id'), table_name='cas_tickets')
    op.drop_table('cas_tickets')
    op.drop_table('legacy_services')
