from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, EqualTo, Length, Optional


class LoginForm(FlaskForm):
    login = StringField(_l("ID number or phone"), validators=[DataRequired(), Length(max=32)],
                        render_kw={"autocomplete": "username", "autocapitalize": "characters"})
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=128)],
                             render_kw={"autocomplete": "current-password"})
    next = HiddenField()
    submit = SubmitField(_l("Log in"))


class RegisterForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=100)],
                       render_kw={"autocomplete": "name"})
    id_number = StringField(_l("ID number"), validators=[DataRequired(), Length(min=18, max=18)],
                            render_kw={"autocapitalize": "characters", "inputmode": "text"})
    phone = StringField(_l("Mobile phone"), validators=[DataRequired(), Length(max=16)],
                        render_kw={"autocomplete": "tel", "inputmode": "tel"})
    code = StringField(_l("SMS verification code"), validators=[Optional(), Length(max=8)],
                       render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"})
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=128)],
                             render_kw={"autocomplete": "new-password"})
    confirm = PasswordField(_l("Repeat password"),
                            validators=[DataRequired(), EqualTo("password", _l("Passwords do not match."))],
                            render_kw={"autocomplete": "new-password"})
    agree = BooleanField(_l("I have read and agree to the terms of service and the privacy notice"),
                         validators=[DataRequired(_l("Please agree to the terms of service and the privacy "
                                                     "notice."))])
    next = HiddenField()
    submit = SubmitField(_l("Create account"))


class ForgotForm(FlaskForm):
    login = StringField(_l("ID number or phone"), validators=[DataRequired(), Length(max=32)],
                        render_kw={"autocomplete": "username", "autocapitalize": "characters"})
    submit = SubmitField(_l("Send verification code"))


class ResetForm(FlaskForm):
    code = StringField(_l("SMS verification code"), validators=[DataRequired(), Length(max=8)],
                       render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"})
    new = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=128)],
                        render_kw={"autocomplete": "new-password"})
    confirm = PasswordField(_l("Repeat new password"),
                            validators=[DataRequired(), EqualTo("new", _l("Passwords do not match."))],
                            render_kw={"autocomplete": "new-password"})
    submit = SubmitField(_l("Set new password"))


class PasswordChangeForm(FlaskForm):
    current = PasswordField(_l("Current password"), validators=[DataRequired()],
                            render_kw={"autocomplete": "current-password"})
    new = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=128)],
                        render_kw={"autocomplete": "new-password"})
    confirm = PasswordField(_l("Repeat new password"),
                            validators=[DataRequired(), EqualTo("new", _l("Passwords do not match."))],
                            render_kw={"autocomplete": "new-password"})
    submit = SubmitField(_l("Change password"))


class ConfirmForm(FlaskForm):
    """A bare CSRF-protected form for buttons (consent, revoke, log out, verify identity)."""

    submit = SubmitField(_l("Confirm"))
