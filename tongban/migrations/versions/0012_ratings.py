"""好差评: service events (rating_events), ratings and bad-rating cases (rating_cases)

Revision ID: 0012_ratings
Revises: 0011_audit_chainer
Create Date: 2026-12-07 06:58:34.770538

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0012_ratings"
down_revision = "0011_audit_chainer"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('rating_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=32), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('case_no', sa.String(length=100), nullable=True),
    sa.Column('service_item_code', sa.String(length=64), nullable=False),
    sa.Column('service_item_name', sa.String(length=200), nullable=False),
    sa.Column('department_code', sa.String(length=18), nullable=False),
    sa.Column('department_name', sa.String(length=200), nullable=False),
    sa.Column('channel', sa.String(length=2), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('citizen_key', sa.String(length=64), nullable=True),
    sa.Column('citizen_masked', sa.String(length=40), nullable=False),
    sa.Column('window', sa.String(length=100), nullable=False),
    sa.Column('staff', sa.String(length=100), nullable=False),
    sa.Column('handled_at', sa.DateTime(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('rate_until', sa.DateTime(), nullable=False),
    sa.Column('link_hash', sa.String(length=64), nullable=False),
    sa.Column('link_used_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_rating_events_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rating_events')),
    sa.UniqueConstraint('client_id', 'case_no', name=op.f('uq_rating_events_client_id')),
    sa.UniqueConstraint('link_hash', name=op.f('uq_rating_events_link_hash')),
    sa.UniqueConstraint('public_id', name=op.f('uq_rating_events_public_id'))
    )
    with op.batch_alter_table('rating_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rating_events_citizen_key'), ['citizen_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_rating_events_client_id'), ['client_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rating_events_department_code'), ['department_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_rating_events_service_item_code'), ['service_item_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_rating_events_user_id'), ['user_id'], unique=False)

    op.create_table('ratings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=32), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('rater_user_id', sa.Integer(), nullable=True),
    sa.Column('via', sa.String(length=10), nullable=False),
    sa.Column('rated_at', sa.DateTime(), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('invalidated', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['rating_events.id'], name=op.f('fk_ratings_event_id_rating_events'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['rater_user_id'], ['users.id'], name=op.f('fk_ratings_rater_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ratings')),
    sa.UniqueConstraint('event_id', name=op.f('uq_ratings_event_id')),
    sa.UniqueConstraint('public_id', name=op.f('uq_ratings_public_id'))
    )
    with op.batch_alter_table('ratings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ratings_month'), ['month'], unique=False)

    op.create_table('rating_cases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rating_id', sa.Integer(), nullable=False),
    sa.Column('department_code', sa.String(length=18), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('verify_due', sa.DateTime(), nullable=False),
    sa.Column('due_at', sa.DateTime(), nullable=False),
    sa.Column('verified_at', sa.DateTime(), nullable=True),
    sa.Column('verify_note', sa.Text(), nullable=False),
    sa.Column('responded_at', sa.DateTime(), nullable=True),
    sa.Column('response', sa.Text(), nullable=False),
    sa.Column('rectified_at', sa.DateTime(), nullable=True),
    sa.Column('rectification', sa.Text(), nullable=False),
    sa.Column('called_back_at', sa.DateTime(), nullable=True),
    sa.Column('callback_answer', sa.String(length=12), nullable=False),
    sa.Column('callback_note', sa.Text(), nullable=False),
    sa.Column('closed_at', sa.DateTime(), nullable=True),
    sa.Column('appealed_at', sa.DateTime(), nullable=True),
    sa.Column('appealed_by', sa.String(length=80), nullable=False),
    sa.Column('appeal_reason', sa.Text(), nullable=False),
    sa.Column('appeal_from', sa.String(length=12), nullable=False),
    sa.Column('appeal_decision', sa.String(length=10), nullable=False),
    sa.Column('appeal_decided_at', sa.DateTime(), nullable=True),
    sa.Column('appeal_note', sa.Text(), nullable=False),
    sa.Column('escalated_at', sa.DateTime(), nullable=True),
    sa.Column('escalation_level', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['rating_id'], ['ratings.id'], name=op.f('fk_rating_cases_rating_id_ratings'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rating_cases')),
    sa.UniqueConstraint('rating_id', name=op.f('uq_rating_cases_rating_id'))
    )
    with op.batch_alter_table('rating_cases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rating_cases_department_code'), ['department_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_rating_cases_state'), ['state'], unique=False)



def downgrade():
    with op.batch_alter_table('rating_cases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rating_cases_state'))
        batch_op.drop_index(batch_op.f('ix_rating_cases_department_code'))

    op.drop_table('rating_cases')
    with op.batch_alter_table('ratings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ratings_month'))

    op.drop_table('ratings')
    with op.batch_alter_table('rating_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rating_events_user_id'))
        batch_op.drop_index(batch_op.f('ix_rating_events_service_item_code'))
        batch_op.drop_index(batch_op.f('ix_rating_events_department_code'))
        batch_op.drop_index(batch_op.f('ix_rating_events_client_id'))
        batch_op.drop_index(batch_op.f('ix_rating_events_citizen_key'))

    op.drop_table('rating_events')
