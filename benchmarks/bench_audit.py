"""How well does the dream audit estimate real returns, and does it flag exploitation?

Two experiments on Pendulum-v1, all artefacts cached in ``--workdir`` so a rerun only redoes what
is missing:

1. **Off-policy evaluation.** Policies of graded quality: checkpoints of one SAC run on the *real*
   env (saved every few hundred steps) plus a uniformly random policy. Each is audited in a dream
   over an ``ensemble:default`` model fitted on real random-action data, with ``real=True``: the
   same start states replayed in the real env. Figures: Spearman rank correlation between the
   dream and the real mean returns (target >= 0.9) and the mean absolute error of the dream mean
   return, relative to the spread (max - min) of the real mean returns (target <= 10%).
2. **Exploitation.** PPO trained for 300k steps in the *deterministic* (too confident) dream of a
   poorly fitted ensemble (50 real random steps; with a whole 200-step episode the Pendulum model
   was already good enough that PPO trained in it did as well in reality as in the dream) against
   the same PPO recipe trained in the stochastic dream of the well fitted one. Each agent is
   audited in the dream it was trained in (what a user would do); the audit should flag the first
   and not the second, and the real replay shows whether the flag was right.

Measured on the project machine (2 shared CPU cores), 2026-11-22, 100 audited episodes per policy
(Walker: 50). Pendulum at commit 3dab910 (full run from the SAC checkpoints: ~5 min), Walker at
8226b3b (same audit and ensemble code), the older run where said:

- Pendulum-v1 OPE, 8 policies (random, SAC after 0.5k-8k real steps), real means -1535 .. -142:
  **Spearman 0.976**, mean |dream - real| 87.5 = **6.3% of the real spread** (1394): both targets
  met. Flags: SAC 8k (dream -813, real -380; 41% unsure steps) "off the data"; SAC 4.5k and 6k
  "exploitation" (27% unsure steps earning > 25% of the return; their dream returns -97/-98 are
  inflated by ~45 over the real -145/-142, though these agents were trained in the real env).
- Pendulum-v1 exploitation: PPO 300k steps in the deterministic 50-step dream: dream -767
  [-883, -657], real -1098: dream - real +331 per episode; **flagged** (off the data: 63% unsure
  steps). PPO 300k in the stochastic well fitted dream: dream -128, real -165, 20% unsure steps:
  **not flagged** (its start-noise scenario: 21.5%). The exploiter audited in the well fitted
  dream: dream -1561 (too pessimistic), 24% unsure: not flagged.
- The same run with the ensemble before its termination head changed (140b7f4; models fitted at
  59ac3dc): OPE Spearman 0.952, 5.5% of the spread; exploiter dream -266 vs real -1143 (+876),
  52% unsure, flagged; sound agent 10% unsure, not flagged.
- Walker2d-v5 OPE, second session (11 policies: random and checkpoints of one 1M-step PPO run
  with SB3 defaults on the real env, every 100k steps, 1805 s on one core; real means 1.4, 256,
  412, 468, 460, 434, 521, 464, 985, 901, 1222; model fitted for 5000 updates on 10k random + 10 x
  5k behaviour steps): mean-transition dream **Spearman 0.736**, mean |dream - real| 261.9 = 21.5%
  of the spread (1220): both targets missed. The dream ranks random < 100k < the 200k-700k block <
  the three walking policies, but cannot order the 200k-700k block (real means within 110 of each
  other) and underrates every walking policy about 2x: dreamed walks fall after ~260 steps where
  the real ones last ~400. The sampled dream did worse (Spearman 0.20: every trained policy dreamed
  at 200-240) and so did a model fitted 3x longer (15k updates: 0.64, 17% of the spread). With more
  behaviour data per checkpoint (``WALKER_BEHAVIOUR_STEPS``, 5k then): 20k steps each,
  Spearman 0.855 and 14.7% of the spread; 50k each, 0.655 and 14.7% (it ranks ppo_300k last but
  one). The 200k-700k block stays unordered at every data size.
- Walker2d-v5 OPE, third session (2026-11-29, a faster machine: the same PPO recipe ran 1M steps in
  478 s and trained much better walkers; real means random 2.5, 100k 319, 200k 399, 300k 621, 400k
  1660, 500k 1872, 600k 1872, 700k 1893, 800k 2225, 900k 1991, 1000k 1948; spread 2223), model fitted
  on 10k random + N steps of each checkpoint for U updates, mean-transition dream, 50 episodes each:
  N=5k, U=5k: Spearman 0.318, 38.7% of the spread (walkers dreamed at 400-1170: the dreamed walker
  drifts out of the healthy range within ~170 steps; with Walker2d's true termination rule in place
  of the learned head the same: 0.318, 39.8%, so the dynamics drift, not the termination head);
  N=20k, U=10k: 0.836, 17.0%; **N=50k, U=20k: Spearman 0.945 (target met), 12.3% (missed)**;
  **N=50k, U=40k: 0.818 (missed), 6.2% (met)**; N=100k, U=40k: 0.700, 17.8% (now the walkers are
  overrated, 2000-2960). The sampled dream with the N=50k, U=20k model: 0.809, 42.5% (every walker
  dreamed at 390-530). Both targets are never met by one model: five of the walkers' real means lie
  within 120 of each other (1872-1991), and their dreamed order changes from fit to fit: two more
  fits of the N=50k, U=20k model on the same data (trainer seeds 1, 2) gave 0.855 / 6.8% and
  0.855 / 10.5%. **The mean of the three fits' dream returns: Spearman 0.945, error 176.8 = 8.0%
  of the spread: both targets met** (``--walker-fits 3``, the default now). That setting and the
  averaging were chosen on this policy set. On another one, fixed in advance (``--walker-ppo-seed 1``:
  real means 2.0, 280, 397, 721, 1171, 1417, 1154, 847, 923, 978, 1095; five within 847-1171), the
  same defaults missed both: fits 0.618 / 0.464 / 0.700, 26.8% / 20.4% / 18.2%; their mean 0.536,
  21.3%. The Walker2d OPE targets are not met in general.
- Walker2d-v5 OPE with the open-loop term (fourth session, 2026-11-29, ``--walker-open-loop 8
  --walker-fit-steps 10000 --walker-fits 1``: 128 windows of 8 steps per update, 10k updates, ~25
  minutes per fit on one core; same data and policies, 100 episodes each). The model drifts much
  less: held-out open-loop error / persistence at h = 10 / 50 / 100 / 200 fell from 0.17 / 0.45 /
  1.00 / 20.4 to 0.12 / 0.11 / 0.22 / 5.7 (set A) and from 0.18 / 0.38 / 1.58 / 100 to 0.09 / 0.10 /
  0.35 / 46 (set B; ``evaluate_model`` on the stores' validation episodes). But the ranking did not
  improve in general: set A **Spearman 0.600, 16.5%** (one-step fit, same seed: 0.945, 12.3%): the
  walkers are now dreamed at 1048-1894, in reverse order of their real returns; set B **0.782,
  24.1%** (one-step: 0.618, 26.8%): the dreamed walkers no longer fall early, but some never fall
  (ppo_1000k 2438 dreamed, 1104 real; ppo_700k 2072, 818). Sampled transitions from the same models:
  every walker dreamed at 570-790 (A: 0.636, 38.9%; B: 0.645, 22.0%). One elite per episode
  (PETS' TS-inf, each of the five elites of set B's seed-0 one-step model rolled out alone, mean
  transitions, returns averaged over elites): members 0.655 / 0.336 / 0.718 / -0.091 / 0.691,
  averaged 0.664, 31.3% (the mean of the elites' means: 0.618, 26.8%).
- A third policy set, held out from all of the above (``--walker-ppo-seed 2 --episodes 50``, the
  defaults; real means 3.0 .. 1455, every walker falls in reality, median real episode length
  171-444 steps): one-step fits 0.591 / 0.145 / 0.027, 19.3% / 29.4% / 36.3%; their mean **0.127,
  26.6%**. Open-loop fit (seed 0, as above): **0.964, 13.6%** (the walkers now ranked almost
  right, but ppo_1000k dreamed at 2351 against 1455 real). Where the dream errs shows in the
  audit's length column (dream / real median episode length), e.g. one-step fit seed 0: ppo_1000k
  320 / 444, ppo_800k 202 / 440: a Walker's return is mostly how long it stays up, and the dream's
  fall times are off by 100-250 steps either way. Over the three sets, one fit each (seed 0): one-step
  0.945 / 0.618 / 0.591 (mean 0.718), 12.3% / 26.8% / 19.3%; open loop 0.600 / 0.782 / 0.964 (mean
  0.782), 16.5% / 24.1% / 13.6%: better on average, on two sets of three, and short of both targets.
  Windows of 16 (64 per update, 10k updates): A 0.582 / 12.8%, B 0.964 / 21.5% (walkers overrated
  by up to 970).
- Walker2d-v5 OPE, fifth session (2026-11-30), the same three sets, 50 episodes each. First, how far
  the real ranking itself can be trusted: two random halves of the real episodes rank the policies
  with Spearman (median of 1000 splits; ``real_split_half_spearman`` in the results) A **0.864**
  (100 episodes; five walkers within 1872-1991), B 0.982, C 1.000. So on set A no estimate can be
  expected to reach 0.9 reliably; B and C are fair tests. Then three ways to dream with the
  open-loop models (H=8), Spearman / error, sets A / B / C:
  ``--walker-dream each-elite`` (every elite member rolls out alone, as open-loop training trains
  it; returns averaged over the five): 0.645 / 18.2%, 0.555 / 19.3%, **1.000 / 2.9%**;
  sampled transitions with the members' std scaled by tau (a driver around ``rank_agents``; tau = 1
  is ``--walker-dream sampled``): tau 0.25: 0.836 / 22.1%, 0.764 / 15.6%, **0.991 / 3.9%**; tau
  0.5: 0.782 / 25.7%, 0.664 / **8.6%**, **0.927 / 5.3%**; tau 0.1 (B, C): 0.755 / 20.9%, 0.991 /
  8.3%. Twice the updates (10k -> 20k, resumed; held-out open-loop error 0.36 -> 0.28 on B, 0.43 ->
  0.34 on C, still falling): B 0.527 / 32.4% (each elite 0.564 / 25.4%), C 0.873 / 10.3% (each
  elite 0.927 / 8.8%): a better fit on held-out data did not give a better estimate. Every variant
  meets both targets on at most one set. Set B's ppo_700k is overrated by every open-loop variant
  (dreamed 1250-2834, real 818; its behaviour data, 50k deterministic steps, is in the training
  set): its dreamed gait is steadier than the real one, which falls after ~300 steps; the learned
  termination agrees with Walker2d's own rule within a few steps on those dreams, so the
  difference is in the dynamics.
  A second open-loop fit per set (trainer seed 1; ``--walker-fits 2``, 50 episodes, one real
  replay for both) and the mean of the two fits' estimates, mean transitions / each elite alone:
  B: fits 0.800 / 25.5% and 0.709 / 26.5%, their mean 0.764 / 24.8% (each elite: 0.645 / 21.3%);
  C: fits 0.964 / 13.6% and 0.745 / 10.7%, **their mean 0.945 / 4.7%: both targets met** (each
  elite: 0.964 / 5.6%, also met). A third fit on C (seed 2: 0.845 / 7.5%): the mean of three
  **0.945 / 3.7%** (each elite: 0.973 / 5.7%). A second fit on A (seed 1: 0.573 / 21.0%; seed 0
  against this run's replay 0.536 / 15.3%): their mean 0.618 / 18.0% (each elite 0.564 / 18.9%),
  against a real split-half reproducibility of 0.827 at 50 episodes. A third fit on B (seed 2:
  0.609 / 11.8%): the mean of three 0.791 / 17.0% (ppo_700k still dreamed at 1779 against 847
  real, ppo_1000k at 1832 against 1095). So the mean of open-loop fits
  meets both targets on the held-out set C, not on A or B; the one-step defaults meet them on A
  only: the Walker2d OPE targets are still not met in general.
- Walker2d-v5 OPE, sixth session (2026-11-30), the open-loop fits of sets B and C, 50 episodes. Where
  the error comes from (``error_sources`` in the results; here per fit, from the audits' lengths): a
  Walker's return is steps alive x reward per step. The dreamed reward per step times the real
  episode lengths meets both targets with every single fit (B: 0.982 / 3.7%, 1.000 / 2.7%, 0.991 /
  3.8%; C: 0.991 / 3.4%, 0.982 / 6.1%, 0.982 / 5.5%); the dreamed lengths times the real reward per
  step with none (B 0.618-0.827, 13.3-27.5%; C 0.636-0.964, 10.8-13.8%). The whole gap is when the
  dreamed walker falls (mean over three fits, dreamed / real length: B ppo_700k 2.11, ppo_1000k 1.58,
  ppo_400k 0.69; C ppo_800k 0.64). Tried against it, scratch drivers on the same fits, 3-fit means
  unless said: (a) ending an episode where the members' disagreement first exceeds the audit's
  "unsure" threshold (MOReL's halt; also 3 or 10 steps in a row, and the 90% quantile): B 0.773 /
  13.3% at best, C 0.900 / 4.6% or unchanged: the overrated walkers stay where the members agree.
  (b) A fall-hazard classifier fitted on the real data, p(the episode terminates within K steps |
  o_t), as a per-step survival weight on the mean-transition dream (C, seed 0; plain 0.964 / 13.6%):
  K = 1: 0.964 / 12.5%, 20: 0.973 / 11.3%, 100: 0.964 / 13.1%: it shortens the short-lived
  policies, not the overrated walker. (c) The members' std is calibrated on held-out one-step
  transitions (z-score rms 1.00 on B, 1.04 on C), yet sampled dreams at that scale make every walker
  fall early: the one-step errors are systematic in the state, not independent noise. (d) Each
  open-loop fit fine-tuned with 32-step windows (32 per update, 3000 updates, learning rate 2e-4;
  the elites' held-out 32-step error 2.04 -> 1.81 on B, 3.62 -> 1.75 on C, seed 0): B 0.773 / 18.1%,
  C 0.773 / 8.4% (C's best walkers now underrated: ppo_800k-1000k dreamed 811-867, real 960-1455).
  (e) The mean of the one-step and the open-loop estimates: A 0.927 / 10.7%, B 0.782 / 12.8%, C 0.745 / 14.5%.
  The averaging over fits is now ``rank_agents(checkpoints=[...])`` (and ``audit --checkpoint RUN
  RUN ...``); its per-agent spread over fits marks B's three most overrated policies (sd 955, 884,
  653 for ppo_500k/700k/1000k, errors +442, +932, +738), but also misses shared errors (C ppo_800k:
  sd 69, error -321; A ppo_800k/900k: sd 39/46, errors -884/-747).
  (f) Two more open-loop fits on B (``--walker-fits 5``; seeds 3, 4: 0.691 / 21.7%, 0.582 / 14.2%):
  the mean of five 0.709 / 13.4% (of three: 0.791 / 17.0%), with ppo_700k at 1491 against 847 real,
  ppo_1000k 1980 against 1095, ppo_400k 779 against 1171: a bias the fits share, which more fits do
  not average out.
  (g) More weight on falls: B's three fits fine-tuned 3000 updates with half of the windows from the
  last 100 steps before falls of episodes of >= 200 steps: mean 0.536 / 12.2%: ppo_700k and
  ppo_1000k now right (863 / 847, 1046 / 1095), ppo_400k-600k now dreamed falling too early (651-797
  against 1154-1417).
- Walker2d-v5 OPE, seventh session (2026-11-30): why the dreamed fall times are wrong, and training
  against it. Set B's ppo_700k, 174 logged real episodes: lengths 260-342 (10th-90th percentile),
  dreamed by the open-loop fit (seed 0) 464-744. Its mean torso angle, real / dreamed: 0.50 / 0.38
  at t = 250, 0.77 / 0.27 at t = 300: the real gait leans further forward every stride until the
  angle limit (1.0) ends it; the dreamed gait does not. The real episodes from nearby starts also spread ~10x
  faster (sd of the forward velocity at t = 50: 0.19 real, 0.02 dreamed). So
  ``--walker-closed-loop``: every open-loop fit is fine-tuned with ``fine_tune_closed_loop`` (each
  behaviour policy re-imagines windows of its own logged episodes acting on the dreamed
  observations; 64-step rollouts, gradients through 8 steps, 1000 updates, ~18-20 min per fit on one
  core; the setting was fixed on B and then run unchanged on C and A). Held-out closed-loop error
  (64 steps): B 11.8 -> 7.2, C 16.8 -> 10.8, A 18.5 -> 12.0 (seed 0). Mean of two fits (seeds 0, 1):
  **B 0.845 / 5.1%** (fits 0.918 / 7.9%, 0.855 / 8.1%; open loop 0.764 / 24.8%: ppo_700k now 955 and
  926 against 847), **C 0.909 / 5.8%: both targets met** (fits 0.909 / 7.6%, 0.873 / 8.4%; open loop
  0.945 / 4.7%), **A 0.891 / 25.6%** (fits 0.882 / 24.8%, 0.891 / 27.8%; open loop 0.618 / 18.0%; the
  real ranking's own split-half reproducibility here 0.827): A's walkers now never fall in the dream
  (2440-3270 against 1660-2225 real, real median lengths 514-789): 64-step windows cannot see a fall
  that comes after 500-800 steps. Over the three sets the mean Spearman rose from 0.776 to 0.882 and
  the mean error fell from 15.8% to 12.2%; both targets are met on one set of three, as before.
  A third fine-tuned fit on B (seed 2, the library's ``fine_tune_closed_loop``: 0.782 / 10.0%): the
  mean of three 0.845 / 6.7% (ppo_400k-600k, real 1171 / 1417 / 1154, dreamed 885 / 1251 / 1530).
  On C (seed 2: 0.964 / 2.7%): the mean of three 0.909 / 4.7%.
  Policies the fine-tune never saw (B, fit 0, tuned under ppo_200k/400k/600k/800k/1000k only,
  ``fine_tune_closed_loop`` with those five): over the other six the mean |dream - real| is 217
  (open loop 364, tuned under all ten 99); ppo_700k 986 against 847 real (open loop 2021), but
  ppo_500k 2423 against 1417 (open loop 2218, tuned under all ten 1006); all eleven: 0.964 / 10.0%.
  The same on C (fit 0): over the six left out 37 (open loop 140, all ten 45); all eleven 0.945 / 2.3%.
  Gradients through 32 steps without truncation diverged (held-out error 3.6 -> 9.2 within 250
  updates), and 16-step rollouts (B only) gave 0.709 / 12.1%. B's and C's figures come from a
  scratch driver of the same algorithm (the library's differs only in the order it samples and in
  the held-out batch that re-picks the elites), A's from this script.
- Walker2d-v5 OPE, eighth session (2026-11-30): the closed-loop fits of the seventh session, dreamed
  with sampled transitions at half the members' std (``EnsembleConfig.noise_scale`` 0.5, which
  ``fine_tune_closed_loop`` now writes into its model; ``--walker-closed-loop --walker-dream
  sampled``). Without noise A's walkers never fall; at the full std they fall far too early
  (A, two fits: 0.709 / 32.9%, 0.936 / 31.8%; dreamed lengths 314-458 against real medians
  514-789). The scale was chosen on A's first fit from 0.25 (0.864 / 16.2%) and 0.5 (0.936 / 6.8%),
  then run unchanged on A's other fits and on B and C. Spearman / error, per fit and their mean:
  **B** 0.927 / 6.3%, 0.964 / 2.7%, 0.909 / 6.5%: mean of two **0.936 / 4.0%**, of three **0.936 /
  4.5%, both targets met**; **C** 0.991 / 8.5%, 0.991 / 5.5%, 1.000 / 4.4%: mean of two **1.000 /
  7.0%**, of three **1.000 / 5.8%, both met**; **A** 0.936 / 6.8%, 0.755 / 11.4%: mean of two
  **0.845 / 8.8%: the error target met, Spearman missed** (A's real ranking reproduces itself
  between two halves of its episodes with 0.827; its seven walkers within 1660-2225 are dreamed
  1232-1886). A third fit on A, run end to end with the library (open-loop fit, trainer seed 2;
  ``fine_tune_closed_loop`` with its defaults, which now write noise_scale 0.5; the sampled audit):
  0.882 / 6.6%; the mean of three **0.845 / 8.0%**. Against 200 fresh real episodes per policy
  (``evaluate_agent``, seed 777; two halves of 100 rank them with 0.936, so A is a fair test at that
  size): A mean of three 0.855 / 8.1%, B 0.945 / 4.4%, C 1.000 / 5.7%. A's misses: ppo_1000k dreamed
  1311-1562 against 1948 real (fit 2 / fit 0), ppo_700k 1540-1763 against 1893.
  Policies left out of the fine-tune (the seventh session's even-checkpoint fits, tempered the same
  way): over the six never tuned under, mean |dream - real| B 86 (mean transitions 217), C 38 (37);
  all eleven B 0.855 / 6.2%, C 1.000 / 7.1%.
  Tried and dropped on the way: the fall-hazard survival weight of the sixth session on the
  mean-transition closed-loop fits (A: K = 20 0.891 / 24.4%, K = 100 0.836 / 17.0%; B: K = 20
  0.891 / 6.6%, K = 100 0.964 / 23.4%); a second fine-tune of A's fits with 256-step rollouts (2
  windows per policy, 500 updates, ~26 min per fit; held-out 256-step closed-loop error 151 -> 53
  and 130 -> 55): every walker of 400k and on now walks all 1000 steps, 0.900 / 40.9%.
- Walker2d-v5 OPE, ninth session (2026-11-30): the eighth session's figures were measured with 50
  dreamed episodes per policy, and at that size the sampled dream's own Monte-Carlo noise is as
  large as the real gaps between walkers (one policy on one fit, six draws of 50 starts: 1356-1833,
  sd of a 50-episode mean ~140; 1000 episodes: 1448 +- 31; the same fits and scale gave A 0.845 and
  0.918 on two draws). ``Ranking.dream_split_half_spearman`` now reports that noise beside the real
  one, and ``--walker-dream-episodes`` dreams more episodes than the real env replays
  (``real_episodes``). With 1000 dreamed episodes per policy and fit at the eighth session's 0.5:
  A 0.891 / 11.5%, B 0.945 / 4.1%, C 1.000 / 6.2% (mean of three fits; the 50-episode estimates had
  been lucky on A's first 50 starts). The scale was chosen again on A's first fit alone, by a rule
  written down before the runs (among the scales with Spearman >= 0.9 the smallest error), from 0.3
  (0.918 / 7.1%), 0.35 (0.909 / 5.6%), 0.4 (0.909 / 5.9%), 0.45 (0.909 / 9.1%), 0.5 (0.909 / 12.6%):
  0.35, now ``ClosedLoopConfig.noise_scale``; then unchanged on the other fits and sets (mean of
  three fits, against 50 real episodes / 200 fresh ones): **A 0.891 / 5.1%** (0.827 / 4.9%): the
  error met, Spearman one swap short; **B 0.900 / 5.4%** (0.891 / 6.1%), **C 1.000 / 4.9%**
  (1.000 / 4.7%): both met. Per fit: A 0.909 / 5.6%, 0.855 / 4.9%, 0.836 / 5.0%; B 0.945 / 5.4%,
  0.945 / 6.0%, 0.873 / 5.8%; C 1.000 / 6.7%, 1.000 / 4.5%, 1.000 / 3.7%. A's miss is ppo_1000k,
  dreamed 1689 against 1948 real (1980 in its logged episodes, so not a data artefact), ranked
  below ppo_400k; A's six best walkers lie within 1872-2225 real. This script end to end
  (``--walker-closed-loop --walker-dream sampled --walker-dream-episodes 1000 --episodes 50``, the
  fits' copies at 0.35): A 0.891 / 5.1%, B 0.900 / 5.4%, C 1.000 / 4.9%; the dream's split-half
  reproducibility 0.991 / 1.000 / 1.000 against the real one's 0.827 / 0.982 / 1.000.
  Policies left out of the fine-tune (even-checkpoint fits, 1000 dreamed episodes): mean error
  over the six unseen B 173 at 0.35 (60 at 0.5), C 23 (43 at 0.5).
  Tried: ending dreamed episodes at termination probability > 0.5 instead of drawing it each step
  (35-55% of the dreamed falls end at states the real healthy rule accepts): A's first fit 0.909 /
  5.5% at 0.35, unchanged; dropped. PETS' TS-inf (``EnsembleConfig.propagation`` "tsinf",
  ``--walker-dream sampled-tsinf``: every dreamed episode keeps one elite, the way each member was
  fine-tuned): on A's first fit 0.882 / 6.6%, 0.955 / 5.6%, 0.955 / 5.7%, 0.955 / 8.1%, 0.909 /
  12.3%, 0.891 / 16.0% at 0.25 / 0.3 / 0.35 / 0.4 / 0.45 / 0.5; the same rule across both ways
  keeps the default (5.558% against 5.577%). Run on every set afterwards, so an exploration and not
  a setting fixed in advance, at 0.35: A 0.927 / 4.6%, B 0.900 / 3.9%, C 1.000 / 5.6%.
  A fourth set, held out from all of the above (``--walker-ppo-seed 3 --walker-fits 2``, its two
  fits fitted (24 min each) and fine-tuned with ``ClosedLoopConfig``'s defaults (18 min each;
  held-out closed-loop error 18.1 -> 10.7, 17.4 -> 10.6) this session; real 2.8 .. 1482):
  **0.973 / 5.8%, both targets met** (fits 0.955 / 6.9%, 0.973 / 4.8%; against 200 fresh real
  episodes per policy 0.991 / 4.9%; real split-half 0.964, the dream's 0.973). TS-inf there at
  0.35: 0.945 / 6.5% (200 real: 0.973 / 5.6%), so the rule's choice held. Over the four sets with
  the one setting: Spearman 0.891 / 0.900 / 1.000 / 0.973 (mean 0.941), error 5.1 / 5.4 / 4.9 /
  5.8% (mean 5.3%).
- Walker2d-v5 OPE, first session (7 policies: random and PPO after 10k-60k real steps, real 253-276):
  Spearman -0.07, 43% of the spread; those checkpoints were not graded.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_audit.py [--workdir DIR] [--stage STAGE]``
with STAGE one of prepare, ope, exploitation, all (Pendulum) or walker (Walker2d-v5 OPE, separate).
From scratch about 40 minutes on 2 busy cores (SAC on the real env, two model fits, two 300k-step
PPO trainings in dreams, the audits); the audits alone about 10 minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

REAL_ENV = "Pendulum-v1"
DREAM_ID = "WorldFlux/Ensemble-Pendulum-v0"
SAC_STEPS = 8000
SAC_SAVE_EVERY = 500
SAC_PICK = (500, 1500, 2500, 3500, 4500, 6000, 8000)  # graded: from untrained to good
PPO_STEPS = 300_000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- stage 1: real-env agents, world models, dream agents -----------------------------------------
def train_sac_checkpoints(work: Path) -> dict[str, Path]:
    """One SAC run on the real env, saved every ``SAC_SAVE_EVERY`` steps (SB3's CheckpointCallback)."""
    folder = work / "sac"
    paths = {f"sac_{s}": folder / f"sac_{s}_steps.zip" for s in SAC_PICK}
    if all(p.is_file() for p in paths.values()):
        return paths
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import CheckpointCallback

    log(f"SAC on real {REAL_ENV} for {SAC_STEPS} steps")
    env = gym.make(REAL_ENV)
    agent = SAC(
        "MlpPolicy",
        env,
        learning_rate=1e-3,
        learning_starts=300,
        policy_kwargs={"net_arch": [64, 64]},
        seed=0,
        device="cpu",
        verbose=0,
    )
    agent.learn(SAC_STEPS, callback=CheckpointCallback(SAC_SAVE_EVERY, str(folder), name_prefix="sac"))
    env.close()
    return paths


def fit_models(work: Path) -> dict[str, Path]:
    """A well fitted ensemble (10k random real steps) and a poorly fitted one (50 real steps, a quarter of
    one episode: one episode is already enough for a usable Pendulum model, see the docstring)."""
    from worldflux_gym.training import fit_world_model

    runs = {
        "good": (work / "model_good", "ensemble:default", 10_000, 2000),
        "poor": (work / "model_poor_50steps", "ensemble:default", 50, 1000),
    }
    for name, (run, model, collect, steps) in runs.items():
        if not (run / "metadata.json").is_file():
            log(f"fit {model} on {collect} random steps of {REAL_ENV} ({name})")
            fit_world_model(REAL_ENV, model, run, steps=steps, collect_steps=collect, progress=False)
    return {name: spec[0] for name, spec in runs.items()}


def train_dream_agents(work: Path, models: dict[str, Path]) -> dict[str, Path]:
    """The same PPO recipe, trained for ``PPO_STEPS`` dreamed steps in each model's dream.

    In the poor model the dream is deterministic (the elites' mean transition): a too-confident
    dream, the setting in which the World Models controller scored 2086 in the dream and 193 in
    reality. The sound agent practises in the stochastic dream of the well fitted model.
    """
    from worldflux_gym.agents import train_agent

    paths = {}
    for name, checkpoint in models.items():
        out = work / "agents" / f"ppo_{name}_dream.zip"
        if name == "poor":
            out = out.with_name("ppo_poor_50steps_deterministic_dream.zip")
        if not out.is_file():
            log(f"PPO for {PPO_STEPS} steps in the {name} dream")
            train_agent(
                DREAM_ID, out, recipe="ppo_pendulum", steps=PPO_STEPS, checkpoint=checkpoint,
                progress=False, tensorboard=False, env_options={"deterministic": name == "poor"},
            )  # fmt: skip
        paths[name] = out
    return paths


def prepare(work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    sac = train_sac_checkpoints(work)
    models = fit_models(work)
    dream_agents = train_dream_agents(work, models)
    return {"sac": sac, "models": models, "dream_agents": dream_agents}


# --- stage 2: the audits -------------------------------------------------------------------------
def random_policy(seed: int = 0):
    """Uniformly random torques (the worst policy of the graded set)."""
    rng = np.random.default_rng(seed)

    def random(obs: np.ndarray) -> np.ndarray:
        return rng.uniform(-2.0, 2.0, size=(len(obs), 1)).astype(np.float32)

    return random


def off_policy_evaluation(artefacts: dict, episodes: int, reports: Path) -> dict:
    """Rank the graded policies by their dream return in the well fitted model, against real returns."""
    from worldflux_gym.audit import rank_agents, write_ranking_report
    from worldflux_gym.audit.report import ranking_text

    agents = {"random": random_policy(), **{name: path for name, path in artefacts["sac"].items()}}
    log(f"off-policy evaluation: {len(agents)} policies x {episodes} episodes, dream and real")
    started = time.perf_counter()
    ranking = rank_agents(
        agents, DREAM_ID, checkpoint=artefacts["models"]["good"], real=True, episodes=episodes, what_if=False
    )
    seconds = time.perf_counter() - started
    write_ranking_report(ranking, reports / "ope", overwrite=True)
    print(ranking_text(ranking), flush=True)
    real = ranking.real_means
    return {
        "policies": {
            name: {
                "dream_mean": float(ranking.dream_means[i]),
                "dream_ci": [ranking.audits[i].nominal.interval.low, ranking.audits[i].nominal.interval.high],
                "real_mean": float(real[i]),
                "unsure_share": ranking.audits[i].nominal.unsure_share,
                "flagged": ranking.audits[i].flagged,
            }
            for i, name in enumerate(ranking.names)
        },
        "spearman": ranking.spearman,
        "mean_absolute_error": ranking.mean_absolute_error,
        "real_spread": float(real.max() - real.min()),
        "relative_error": ranking.relative_error,
        "real_split_half_spearman": ranking.real_split_half_spearman,
        "targets_met": bool(ranking.spearman >= 0.9 and ranking.relative_error <= 0.10),
        "seconds": round(seconds, 1),
    }


def exploitation(artefacts: dict, episodes: int, reports: Path) -> dict:
    """Each dream-trained PPO agent audited in its own dream (and the exploiter in the good one)."""
    from worldflux_gym.audit import audit_agent, summary_text, write_report

    cases = {
        "exploiter_in_poor_dream": ("poor", "poor"),
        "sound_in_good_dream": ("good", "good"),
        "exploiter_in_good_dream": ("poor", "good"),
    }
    results = {}
    for label, (agent, model) in cases.items():
        log(f"exploitation case {label}")
        result = audit_agent(
            artefacts["dream_agents"][agent], DREAM_ID, checkpoint=artefacts["models"][model], real=True,
            episodes=episodes, name=label,
        )  # fmt: skip
        write_report(result, reports / label, videos=1, overwrite=True)
        print(summary_text(result), flush=True)
        s = result.nominal
        results[label] = {
            "dream_mean": s.mean_return,
            "dream_ci": [s.interval.low, s.interval.high],
            "real_mean": float(result.real.real_returns.mean()),
            "gap_mean": result.real.gap_interval.mean,
            "unsure_share": s.unsure_share,
            "return_share_unsure": s.return_share_unsure,
            "threshold": result.calibration.threshold,
            "flagged": result.flagged,
            "flag_reason": s.flag_reason,
            "reward_above_real_share": s.reward_above_real_share,
            "verdict": result.verdict(),
            "scenarios": {k: v.mean_return for k, v in result.scenarios.items()},
            "seconds": result.seconds,
        }
    results["detected"] = bool(
        results["exploiter_in_poor_dream"]["flagged"] and not results["sound_in_good_dream"]["flagged"]
    )
    return results


# --- Walker2d-v5: off-policy evaluation only --------------------------------------------------------
WALKER_ENV, WALKER_DREAM = "Walker2d-v5", "WorldFlux/Ensemble-Walker-v0"
WALKER_PPO_STEPS, WALKER_SAVE_EVERY = 1_000_000, 100_000
WALKER_FIT_STEPS = 20_000
WALKER_FITS = 3  # models fitted on the same data (trainer seeds 0, 1, 2); their dream returns are averaged
WALKER_WINDOWS = 128  # windows per update when fitting open loop
WALKER_RANDOM_STEPS, WALKER_BEHAVIOUR_STEPS = 10_000, 50_000  # logged data: random, then per checkpoint
# How a fitted model dreams in the Walker audit: "mean" transitions (the mean of the elites' means
# each step; the default: over Walker's 1000-step episodes the sampled dream compounds its noise and
# every walking policy falls early, Spearman 0.20 sampled vs 0.74 mean in the second session),
# "sampled" ones (a random elite per row and step, sampling its Gaussian with its std x the model's
# noise_scale: 0.35 for closed-loop fine-tuned models, the ninth session's setting), or
# "each-elite": every elite member rolls out alone with its own mean (what open-loop training
# optimises), and a policy's estimate is the average over elites (PETS' TS-inf, mean transitions);
# "sampled-tsinf": sampled, but each dreamed episode keeps one elite (``propagation`` "tsinf").
WALKER_DREAMS = ("mean", "sampled", "each-elite", "sampled-tsinf")


class TimedCheckpoints(BaseCallback):
    """Save every ``every`` steps and record the training seconds at each save (``times.json``), so
    the same run also gives PPO's wall-clock to a real return."""

    def __init__(self, every: int, folder: Path):
        super().__init__()
        self.every, self.folder = every, folder
        self.times: dict[str, float] = {}

    def _on_training_start(self) -> None:
        self.started = time.perf_counter()

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            self.model.save(self.folder / f"ppo_{self.num_timesteps}_steps.zip")
            self.times[str(self.num_timesteps)] = round(time.perf_counter() - self.started, 1)
            (self.folder / "times.json").write_text(json.dumps(self.times, indent=1) + "\n")
        return True


def train_walker_ppo(folder: Path, seed: int = 0) -> dict[str, Path]:
    """One PPO run (SB3 defaults) on the real Walker2d-v5, saved every ``WALKER_SAVE_EVERY`` steps."""
    picks = range(WALKER_SAVE_EVERY, WALKER_PPO_STEPS + 1, WALKER_SAVE_EVERY)
    policies = {f"ppo_{s // 1000}k": folder / f"ppo_{s}_steps.zip" for s in picks}
    if not all(p.is_file() for p in policies.values()):
        import gymnasium as gym
        from stable_baselines3 import PPO

        log(f"PPO on real {WALKER_ENV} for {WALKER_PPO_STEPS} steps")
        folder.mkdir(parents=True, exist_ok=True)
        env = gym.make(WALKER_ENV)
        agent = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0)
        agent.learn(WALKER_PPO_STEPS, callback=TimedCheckpoints(WALKER_SAVE_EVERY, folder))
        env.close()
    return policies


def walker(
    work: Path,
    episodes: int,
    behaviour_steps: int = WALKER_BEHAVIOUR_STEPS,
    fit_steps: int = WALKER_FIT_STEPS,
    fits: int = WALKER_FITS,
    ppo_seed: int = 0,
    open_loop: int = 1,
    dream: str = "mean",
    closed_loop: bool = False,
    dream_episodes: int | None = None,
) -> dict:
    """Checkpoints of one PPO run on the real Walker2d-v5 (every 100k steps, so they span random to
    walking) plus random actions, audited in ``ensemble:default`` dreams fitted on the logged data
    of those behaviour policies (the DOPE setting: random data alone never shows walking).

    ``fits`` models are fitted on the same data with trainer seeds 0, 1, ...; one ranking over all of
    them (``rank_agents(checkpoints=...)``) gives the estimate, the mean of their dream returns per
    policy, and each fit's own Spearman and error are reported beside it: from fit to fit the
    dreamed walkers' returns move by hundreds (seed 0/1/2 at N=50k, U=20k: Spearman 0.945 / 0.855 /
    0.855), more than the real gaps between them. About 8 minutes per fit plus 3 per audit on one
    core of the third session's machine, once the PPO run (8 minutes there) exists.

    ``open_loop`` H > 1 fits the ensemble with its open-loop term over ``WALKER_WINDOWS`` windows of
    H steps per update (H=8: 1024 transitions per update, ~7x the seconds of a one-step update).

    ``dream``: how each fitted model imagines, see ``WALKER_DREAMS``. Fits already in ``work`` are
    reused, so another ``dream`` re-audits the same models.

    ``closed_loop``: each fit is then fine-tuned with ``fine_tune_closed_loop`` under the ten PPO
    checkpoints that logged the behaviour data (``ClosedLoopConfig`` defaults, ~18 minutes per fit on
    one core) into ``<fit>_closed_loop``, and those are audited; their sampled dreams use 0.35 of the
    members' std (``--walker-dream sampled``: the ninth session's setting; a ``<fit>_closed_loop``
    keeps the scale it was saved with: 1.0 before ``noise_scale`` existed, 0.5 in the eighth
    session). The policies audited are the behaviour policies themselves, so this measures how well
    a model dreams the policies it was tuned under, not an unseen one.

    ``dream_episodes``: dreamed episodes per policy and model (default ``episodes``); the real env
    replays the first ``episodes`` of the same starts. A sampled dream's return over 1000 steps
    varies as much as the real one (sd ~1000 for a walker that may fall), so at 50 episodes its
    Monte-Carlo noise alone reorders walkers whose real means lie within ~100 of each other."""
    from worldflux_gym.audit import rank_agents, write_ranking_report
    from worldflux_gym.audit.audit import estimate_errors
    from worldflux_gym.audit.report import ranking_text
    from worldflux_gym.data import collect_to_store
    from worldflux_gym.training import fine_tune_closed_loop, fit_world_model

    folder = work / "walker"
    policies = train_walker_ppo(folder / "ppo", ppo_seed)
    data = folder / "data"
    if not data.is_dir():
        log("collect behaviour data")
        collect_to_store(WALKER_ENV, WALKER_RANDOM_STEPS, data, seed=0, progress=False)
        for i, path in enumerate(policies.values()):
            collect_to_store(
                WALKER_ENV, behaviour_steps, data, policy=path, seed=1000 * (i + 1), progress=False
            )
    runs = [folder / ("model" if seed == 0 else f"model_seed{seed}") for seed in range(fits)]
    for seed, run in enumerate(runs):
        if not (run / "metadata.json").is_file():
            log(f"fit ensemble:default, trainer seed {seed}")
            windows = {"sequence_length": open_loop, "batch_size": WALKER_WINDOWS} if open_loop > 1 else {}
            fit_world_model(
                WALKER_ENV, "ensemble:default", run, data_dir=data, steps=fit_steps, seed=seed,
                progress=False, **windows,
            )  # fmt: skip
    if closed_loop:
        tuned = [run.with_name(run.name + "_closed_loop") for run in runs]
        for run, out in zip(runs, tuned):
            if not (out / "config.json").is_file():
                log(f"closed-loop fine-tune of {run.name}")
                fine_tune_closed_loop(run, list(policies.values()), out, device="cpu", progress=False)
        runs = tuned
    dream_episodes = dream_episodes or episodes
    log(
        f"Walker2d off-policy evaluation: {len(policies) + 1} policies x {dream_episodes} dreamed episodes "
        f"x {fits} models, {episodes} real episodes"
    )
    models_per_fit = [_walker_dream_models(run, dream) for run in runs]
    ranking = rank_agents(
        {"random": _walker_random(), **policies},
        WALKER_DREAM,
        checkpoints=[model for models in models_per_fit for model in models],
        episodes=dream_episodes,
        real_episodes=episodes,
        what_if=False,
        deterministic=not dream.startswith("sampled"),
        real=True,
    )
    tag = "_closed_loop" if closed_loop else ""
    write_ranking_report(ranking, work / "reports" / f"walker_ope_{dream}_{fits}fits{tag}", overwrite=True)
    print(ranking_text(ranking), flush=True)
    real, mean_dream = ranking.real_means, ranking.dream_means
    rho, error, relative = ranking.spearman, ranking.mean_absolute_error, ranking.relative_error
    per_model = ranking.dream_means_per_model
    per_model = ranking.dream_means[None] if per_model is None else per_model  # one model: one row
    estimates, per_fit, row = [], [], 0
    for seed, models in enumerate(models_per_fit):
        estimates.append(per_model[row : row + len(models)].mean(axis=0))
        row += len(models)
        fit_rho, fit_error, fit_relative = estimate_errors(estimates[-1], real)
        per_fit.append(
            {
                "seed": seed,
                "spearman": fit_rho,
                "mean_absolute_error": fit_error,
                "relative_error": fit_relative,
            }
        )
    return {
        "policies": {
            n: {
                "dream_mean": float(d),
                "real_mean": float(r),
                "dream_mean_per_fit": [float(x[i]) for x in estimates],
            }
            for i, (n, d, r) in enumerate(zip(ranking.names, mean_dream, real))
        },
        "dream": dream,
        "closed_loop": closed_loop,
        "per_fit": per_fit,
        "spearman": rho,
        # how well two halves of the real episodes agree on the ranking: near 1, the target is fair
        "real_split_half_spearman": ranking.real_split_half_spearman,
        "dream_episodes": dream_episodes,
        "dream_split_half_spearman": ranking.dream_split_half_spearman,
        "mean_absolute_error": error,
        "real_spread": float(real.max() - real.min()),
        "relative_error": relative,
        "error_sources": _error_sources(ranking),
    }


def _error_sources(ranking) -> dict:
    """Which factor of a return, steps alive x reward per step, the estimate gets wrong: the first
    model's estimate with each factor replaced by the real one in turn (Spearman, error / spread)."""
    from worldflux_gym.audit.audit import estimate_errors

    real_lengths = np.array([a.real.real_lengths.mean() for a in ranking.audits])
    real_returns = ranking.real_means
    dream_lengths = np.array([a.nominal.lengths.mean() for a in ranking.audits])
    dream_returns = np.array([a.nominal.mean_return for a in ranking.audits])
    estimates = {
        "dreamed_reward_per_step_real_lengths": real_lengths * dream_returns / dream_lengths,
        "dreamed_lengths_real_reward_per_step": dream_lengths * real_returns / real_lengths,
    }
    sources = {}
    for name, estimate in estimates.items():
        rho, _, relative = estimate_errors(estimate, real_returns)
        sources[name] = {"spearman": rho, "relative_error": relative}
    return sources


def _walker_dream_models(run: Path, dream: str) -> list[Path | torch.nn.Module]:
    """What one fit dreams with: its checkpoint, or, for ``each-elite``, one model per elite member
    (the same weights, each imagining with that member alone), or for ``sampled-tsinf`` the fit
    with ``propagation`` "tsinf" (in memory: the checkpoint is not touched)."""
    if dream not in ("each-elite", "sampled-tsinf"):
        return [run]
    import copy

    from worldflux_gym.core.checkpoint import from_pretrained

    fitted = from_pretrained(run, device="cpu")
    if dream == "sampled-tsinf":
        fitted.config.propagation = "tsinf"
        return [fitted]
    models = []
    for member in fitted.elite_index.tolist():
        model = copy.deepcopy(fitted)
        model.elite_index = torch.tensor([member])  # deterministic transitions: this member's mean alone
        models.append(model)
    return models


def _walker_random():
    rng = np.random.default_rng(0)

    def random(obs: np.ndarray) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=(len(obs), 6)).astype(np.float32)

    return random


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/worldflux-bench-audit")
    parser.add_argument("--stage", choices=("prepare", "ope", "exploitation", "all", "walker"), default="all")
    parser.add_argument("--episodes", type=int, default=100, help="audited episodes per policy")
    parser.add_argument(
        "--walker-behaviour-steps", type=int, default=WALKER_BEHAVIOUR_STEPS, help="logged steps each"
    )
    parser.add_argument("--walker-fit-steps", type=int, default=WALKER_FIT_STEPS, help="model updates")
    parser.add_argument(
        "--walker-fits", type=int, default=WALKER_FITS, help="models averaged (seeds 0, 1, ...)"
    )
    parser.add_argument(
        "--walker-ppo-seed", type=int, default=0, help="seed of the real PPO run (the policies)"
    )
    parser.add_argument(
        "--walker-dream",
        choices=WALKER_DREAMS,
        default="mean",
        help="how the models imagine (see WALKER_DREAMS)",
    )
    parser.add_argument(
        "--walker-open-loop", type=int, default=1, help="fit with the open-loop term over H steps (1: off)"
    )
    parser.add_argument(
        "--walker-closed-loop",
        action="store_true",
        help="fine-tune every fit closed loop under the behaviour policies, audit those",
    )
    parser.add_argument(
        "--walker-dream-episodes",
        type=int,
        help="dreamed episodes per policy and model (default --episodes, which the real env replays)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.workdir)
    if args.stage == "walker":  # separate: about 15 minutes more on 2 busy cores
        results = walker(
            work,
            args.episodes,
            args.walker_behaviour_steps,
            args.walker_fit_steps,
            args.walker_fits,
            args.walker_ppo_seed,
            args.walker_open_loop,
            args.walker_dream,
            args.walker_closed_loop,
            args.walker_dream_episodes,
        )
        (work / "results_walker.json").write_text(json.dumps(results, indent=2) + "\n")
        for fit in results["per_fit"]:
            print(
                f"fit seed {fit['seed']}: Spearman {fit['spearman']:.3f}, error {fit['relative_error']:.1%}"
            )
        print(
            f"\nWalker2d-v5 OPE, dream returns averaged over {len(results['per_fit'])} fits: Spearman "
            f"{results['spearman']:.3f} (target >= 0.9), MAE {results['mean_absolute_error']:.1f} = "
            f"{results['relative_error']:.1%} of the real spread {results['real_spread']:.0f} (target <= 10%)"
        )
        labels = {
            "dreamed_reward_per_step_real_lengths": "dreamed reward per step x real episode lengths",
            "dreamed_lengths_real_reward_per_step": "dreamed episode lengths x real reward per step",
        }
        for name, figures in results["error_sources"].items():
            print(
                f"first model, {labels[name]}: Spearman {figures['spearman']:.3f}, "
                f"error {figures['relative_error']:.1%}"
            )
        return
    artefacts = prepare(work)
    log("prepared: " + json.dumps({k: {n: str(p) for n, p in v.items()} for k, v in artefacts.items()}))
    if args.stage == "prepare":
        return
    reports = work / "reports"
    if args.stage in ("ope", "all"):
        ope = off_policy_evaluation(artefacts, args.episodes, reports)
        (work / "results_ope.json").write_text(json.dumps(ope, indent=2) + "\n")
    if args.stage in ("exploitation", "all"):
        exp = exploitation(artefacts, args.episodes, reports)
        (work / "results_exploitation.json").write_text(json.dumps(exp, indent=2) + "\n")
    if args.stage != "all":
        return
    print(
        f"\nPendulum-v1 OPE: Spearman {ope['spearman']:.3f} (target >= 0.9), "
        f"MAE {ope['mean_absolute_error']:.1f} = {ope['relative_error']:.1%} of the real spread "
        f"{ope['real_spread']:.0f} (target <= 10%)"
    )
    for label in ("exploiter_in_poor_dream", "sound_in_good_dream", "exploiter_in_good_dream"):
        r = exp[label]
        print(
            f"{label}: dream {r['dream_mean']:.0f}, real {r['real_mean']:.0f}, "
            f"unsure {r['unsure_share']:.1%}, flagged {r['flagged']}"
        )
    print(f"exploitation detected (exploiter flagged, sound agent not): {exp['detected']}")
    log(f"results in {work / 'results.json'}, reports in {reports}")


if __name__ == "__main__":
    main()
