/* SAML HTTP-POST binding (saml/views.py): submit the response form to the service provider at once.
   Without JavaScript the person presses the button. */
(function () {
  var form = document.getElementById("saml-post");
  if (form) { form.submit(); }
})();
