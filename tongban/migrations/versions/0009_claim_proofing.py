"""enterprise claim proofing: the register's contact phone, claims with dispute and undo, ID-number recoveries

Revision ID: 0009_claim_proofing
Revises: 0008_licence_binding
Create Date: 2026-12-07 07:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0009_claim_proofing"
down_revision = "0008_licence_binding"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('legal_person_register', schema=None) as batch_op:
        batch_op.add_column(sa.Column('contact_phone', sa.String(length=20), nullable=True))

    op.create_table('enterprise_claims',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('previous_rep_id', sa.Integer(), nullable=True),
    sa.Column('sid', sa.String(length=64), nullable=True),
    sa.Column('acr', sa.String(length=10), nullable=False),
    sa.Column('amr', sa.String(length=100), nullable=False),
    sa.Column('claimed_at', sa.DateTime(), nullable=False),
    sa.Column('notified_phone', sa.String(length=20), nullable=True),
    sa.Column('dispute_code_hash', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('disputed_at', sa.DateTime(), nullable=True),
    sa.Column('disputed_by', sa.String(length=80), nullable=True),
    sa.Column('dispute_note', sa.Text(), nullable=True),
    sa.Column('undone_at', sa.DateTime(), nullable=True),
    sa.Column('undone_by', sa.String(length=80), nullable=True),
    sa.Column('undo_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_enterprise_claims_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['previous_rep_id'], ['users.id'], name=op.f('fk_enterprise_claims_previous_rep_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_enterprise_claims_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enterprise_claims'))
    )
    with op.batch_alter_table('enterprise_claims', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_enterprise_claims_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_enterprise_claims_user_id'), ['user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_enterprise_claims_state'), ['state'], unique=False)

    op.create_table('id_recoveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('id_number_masked', sa.String(length=18), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('previous_user_id', sa.Integer(), nullable=False),
    sa.Column('by', sa.String(length=80), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_id_recoveries_owner_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['previous_user_id'], ['users.id'], name=op.f('fk_id_recoveries_previous_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_id_recoveries'))
    )
    with op.batch_alter_table('id_recoveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_id_recoveries_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_id_recoveries_previous_user_id'), ['previous_user_id'], unique=False)


def downgrade():
    with op.batch_alter_table('id_recoveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_id_recoveries_previous_user_id'))
        batch_op.drop_index(batch_op.f('ix_id_recoveries_owner_id'))
    op.drop_table('id_recoveries')
    with op.batch_alter_table('enterprise_claims', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_enterprise_claims_state'))
        batch_op.drop_index(batch_op.f('ix_enterprise_claims_user_id'))
        batch_op.drop_index(batch_op.f('ix_enterprise_claims_org_id'))
    op.drop_table('enterprise_claims')
    with op.batch_alter_table('legal_person_register', schema=None) as batch_op:
        batch_op.drop_column('contact_phone')
