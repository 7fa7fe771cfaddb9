"""The analytical model of the paper's appendix C, as executable, self-checking code.

- ``appendix_c``: the printed forms (log Z, h, Q, expansion (3), f, g, kappa, psi, the
  admissibility thresholds, the mean-field loss, eq. (10)), with the alternative readings.
- ``stationary``: what the paper did not check (stationarity, true stationary points,
  the infimum of the exact loss, the sign claims).
- ``fyodorov``: eq. (13) and the Jacobian estimate of section C.3.
- ``fgsm_gap``: the measured gap change of a trained model under FGSM (torch).
- ``model.write_theory``: the checks and statements, stored as ``theory.json`` (with the
  measured gap changes in ``fgsm_gap.npz``; ``stored`` reads them back). Figures C.1-C.3
  are drawn by the report (`logitscope.report.figures_theory`).
"""
