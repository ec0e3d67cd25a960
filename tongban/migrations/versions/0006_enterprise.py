"""enterprise (legal person) accounts: the local legal person register, administrators,
agent authorisations, and who each session acts as at each system

Revision ID: 0006_enterprise
Revises: 0005_mfa
Create Date: 2026-11-23 12:46:42

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0006_enterprise"
down_revision = "0005_mfa"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('legal_person_register',
    sa.Column('uscc', sa.String(length=18), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('legal_rep_id_number', sa.String(length=18), nullable=False),
    sa.Column('legal_rep_name', sa.String(length=100), nullable=False),
    sa.PrimaryKeyConstraint('uscc', name=op.f('pk_legal_person_register'))
    )

    op.create_table('enterprise_admins',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('appointed_by_id', sa.Integer(), nullable=True),
    sa.Column('appointed_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['appointed_by_id'], ['users.id'], name=op.f('fk_enterprise_admins_appointed_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_enterprise_admins_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_enterprise_admins_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enterprise_admins')),
    sa.UniqueConstraint('org_id', 'user_id', name=op.f('uq_enterprise_admins_org_id'))
    )

    with op.batch_alter_table('enterprise_admins', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_enterprise_admins_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_enterprise_admins_user_id'), ['user_id'], unique=False)

    op.create_table('enterprise_agents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('client_ids', sa.JSON(), nullable=False),
    sa.Column('valid_from', sa.DateTime(), nullable=False),
    sa.Column('valid_until', sa.DateTime(), nullable=False),
    sa.Column('granted_by_id', sa.Integer(), nullable=True),
    sa.Column('granted_at', sa.DateTime(), nullable=False),
    sa.Column('withdrawn_at', sa.DateTime(), nullable=True),
    sa.Column('withdrawn_by_id', sa.Integer(), nullable=True),
    sa.Column('ended_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['granted_by_id'], ['users.id'], name=op.f('fk_enterprise_agents_granted_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_enterprise_agents_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_enterprise_agents_user_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['withdrawn_by_id'], ['users.id'], name=op.f('fk_enterprise_agents_withdrawn_by_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enterprise_agents'))
    )

    with op.batch_alter_table('enterprise_agents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_enterprise_agents_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_enterprise_agents_user_id'), ['user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_enterprise_agents_valid_until'), ['valid_until'], unique=False)

    op.create_table('enterprise_acting',
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=True),
    sa.Column('role', sa.String(length=20), nullable=True),
    sa.Column('agent_id', sa.Integer(), nullable=True),
    sa.Column('chosen_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['enterprise_agents.id'], name=op.f('fk_enterprise_acting_agent_id_enterprise_agents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_enterprise_acting_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sid'], ['login_sessions.sid'], name=op.f('fk_enterprise_acting_sid_login_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sid', 'client_id', name=op.f('pk_enterprise_acting'))
    )

    with op.batch_alter_table('enterprise_acting', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_enterprise_acting_agent_id'), ['agent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_enterprise_acting_org_id'), ['org_id'], unique=False)


def downgrade():
    with op.batch_alter_table('enterprise_acting', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_enterprise_acting_org_id'))
        batch_op.drop_index(batch_op.f('ix_enterprise_acting_agent_id'))

    op.drop_table('enterprise_acting')
    with op.batch_alter_table('enterprise_agents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_enterprise_agents_valid_until'))
        batch_op.drop_index(batch_op.f('ix_enterprise_agents_user_id'))
        batch_op.drop_index(batch_op.f('ix_enterprise_agents_org_id'))

    op.drop_table('enterprise_agents')
    with op.batch_alter_table('enterprise_admins', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_enterprise_admins_user_id'))
        batch_op.drop_index(batch_op.f('ix_enterprise_admins_org_id'))

    op.drop_table('enterprise_admins')
    op.drop_table('legal_person_register')
