"""licence verification bound to the issued document, issuing departments and delegations

Revision ID: 0008_licence_binding
Revises: 0007_qr_device
Create Date: 2026-12-07 07:10:00

"""
import hashlib
import re

from alembic import op
import sqlalchemy as sa

_BYTE_RANGE = re.compile(rb"/ByteRange\s*\[\s*0\s+(\d+)\s+(\d+)\s+(\d+)\s*\]")


# revision identifiers, used by Alembic.
revision = "0008_licence_binding"
down_revision = "0007_qr_device"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('licences', schema=None) as batch_op:
        batch_op.add_column(sa.Column('signed_sha256', sa.String(length=64), server_default='', nullable=False))
        batch_op.add_column(sa.Column('department_uscc', sa.String(length=18), server_default='', nullable=False))
        batch_op.create_index(batch_op.f('ix_licences_department_uscc'), ['department_uscc'], unique=False)
    # licences issued so far: the issuing organisation is the department, and the hash of the
    # revision their (only, certifying) seal covers comes from the stored PDF
    op.execute("UPDATE licences SET department_uscc = issuer_uscc")
    conn = op.get_bind()
    licences = sa.table("licences", sa.column("id", sa.Integer), sa.column("pdf", sa.LargeBinary),
                        sa.column("signed_sha256", sa.String))
    ids = [r[0] for r in conn.execute(sa.select(licences.c.id))]
    for lid in ids:
        pdf = conn.execute(sa.select(licences.c.pdf).where(licences.c.id == lid)).scalar() or b""
        found = _BYTE_RANGE.search(pdf)
        if found:
            end = int(found.group(2)) + int(found.group(3))
            if end <= len(pdf):
                conn.execute(licences.update().where(licences.c.id == lid)
                             .values(signed_sha256=hashlib.sha256(pdf[:end]).hexdigest()))
    with op.batch_alter_table('licence_download_links', schema=None) as batch_op:
        batch_op.add_column(sa.Column('copy_sha256', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_licence_download_links_copy_sha256'), ['copy_sha256'], unique=False)
    op.create_table('licence_delegations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('department_uscc', sa.String(length=18), nullable=False),
    sa.Column('issuer_uscc', sa.String(length=18), nullable=False),
    sa.Column('granted_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_licence_delegations')),
    sa.UniqueConstraint('department_uscc', 'issuer_uscc', name=op.f('uq_licence_delegations_department_uscc'))
    )
    with op.batch_alter_table('licence_delegations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_licence_delegations_department_uscc'), ['department_uscc'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('licence_delegations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_licence_delegations_department_uscc'))
    op.drop_table('licence_delegations')
    with op.batch_alter_table('licence_download_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_licence_download_links_copy_sha256'))
        batch_op.drop_column('copy_sha256')
    with op.batch_alter_table('licences', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_licences_department_uscc'))
        batch_op.drop_column('department_uscc')
        batch_op.drop_column('signed_sha256')
